"""What the debugger shows: registers, the VMCS, guest memory, disassembly, exits.

Plain text lines (the debugger colours them only on a terminal), shared by `vtemu debug`
and the gdb stub's `monitor` commands. Addresses are linear (GVA: CS.base + RIP for code)
unless marked as guest-physical.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import capstone
import unicorn.x86_const as U

from vtemu.debug.trace import TraceRecord
from vtemu.debug.trace_export import decoded_qualification
from vtemu.machine.cpustate import Seg
from vtemu.machine.decode import CodeMode
from vtemu.machine.translation import MemoryAccess, TranslationFault
from vtemu.vmx import controls
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.interruption import InterruptionInfo
from vtemu.vmx.qualifications import decode_qualification
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.machine.vcpu import VCpu
    from vtemu.vmx.cpu import VmxCpu

GPRS = ("RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP", "RSP",
        "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15")
IA32_EFER = 0xC0000080
_FLAGS = ((0, "CF"), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"), (8, "TF"), (9, "IF"),
          (10, "DF"), (11, "OF"), (14, "NT"), (16, "RF"), (17, "VM"), (18, "AC"))
_CS_MODES = {CodeMode.BITS16: capstone.CS_MODE_16, CodeMode.BITS32: capstone.CS_MODE_32,
             CodeMode.BITS64: capstone.CS_MODE_64}
# Fields shown with their flag names (SDM 24.6, 24.7, 24.8: the controls as IntFlags).
_CONTROL_FIELDS = {
    F.PIN_BASED_VM_EXEC_CONTROL: controls.PinBasedControls,
    F.CPU_BASED_VM_EXEC_CONTROL: controls.PrimaryProcessorControls,
    F.SECONDARY_VM_EXEC_CONTROL: controls.SecondaryProcessorControls,
    F.VM_EXIT_CONTROLS: controls.ExitControls,
    F.VM_ENTRY_CONTROLS: controls.EntryControls,
}
_INTERRUPTION_FIELDS = (F.VM_EXIT_INTR_INFO, F.IDT_VECTORING_INFO_FIELD, F.VM_ENTRY_INTR_INFO_FIELD)
SIZES = {"b": 1, "w": 2, "d": 4, "q": 8}


def flags_text(rflags: int) -> str:
    names = [name for bit, name in _FLAGS if rflags >> bit & 1]
    return f"[{' '.join(names)}] IOPL={rflags >> 12 & 3}"


def register_lines(vcpu: "VCpu") -> list[str]:
    read = vcpu.read
    values = [f"{name.lower():>3} {read(getattr(U, 'UC_X86_REG_' + name)):016x}" for name in GPRS]
    lines = ["  ".join(values[i:i + 4]) for i in range(0, len(values), 4)]
    rflags = read(U.UC_X86_REG_RFLAGS)
    lines.append(f"rip {read(U.UC_X86_REG_RIP):016x}  rflags {rflags:08x} {flags_text(rflags)}")
    context = vcpu.context.load()
    for seg in Seg:
        cache = context.segment(seg)
        lines.append(f"{seg.name.lower():>3} {cache.selector:04x} base={cache.base:016x} "
                     f"limit={cache.limit:08x} flags={cache.flags:06x}")
    for name in ("gdt", "idt", "ldt", "tr"):
        cache = context.table(name)
        lines.append(f"{name:>3} {cache.selector:04x} base={cache.base:016x} limit={cache.limit:08x}")
    control = [f"cr{n}={read(getattr(U, f'UC_X86_REG_CR{n}')):x}" for n in (0, 2, 3, 4)]
    lines.append(" ".join(control) + f" cr8={vcpu.tpr:x} efer={vcpu.read_msr(IA32_EFER):x} "
                 f"cpl={context.cpl}")
    return lines


def vmcs_lines(cpu: "VmxCpu", everything: bool = False) -> list[str]:
    """Every VMCS field (non-zero ones unless `everything`), controls and exit information
    decoded: the exit reason by name, the qualification in its SDM layout (Tables 27-1..27-7),
    interruption-information fields (24.8.3, 24.9.2)."""
    lines = []
    rows = cpu.vmcs.dump(nonzero_only=not everything)
    reason = _exit_reason(cpu)
    for name, value in rows:
        lines.append(f"{name:<40} {value:#018x}{_decoded_field(F[name], value, reason, cpu)}")
    return lines


def _exit_reason(cpu: "VmxCpu") -> ExitReason | None:
    number = cpu.vmcs.read(F.EXIT_REASON) & 0xFFFF
    return ExitReason(number) if number in ExitReason._value2member_map_ else None


def _decoded_field(field: F, value: int, reason: ExitReason | None, cpu: "VmxCpu") -> str:
    flags = _CONTROL_FIELDS.get(field)
    if flags is not None:
        names = [member.name for member in flags if member.value & value and member.name]
        return "  " + "|".join(names) if names else ""
    if field is F.EXIT_REASON and reason is not None:
        return f"  {reason.name}" + (" (entry failure)" if value >> 31 else "")
    if field is F.EXIT_QUALIFICATION and reason is not None:
        info = InterruptionInfo.decode(cpu.vmcs.read(F.VM_EXIT_INTR_INFO))
        try:
            layout = decode_qualification(reason, value, vector=info.vector if info.valid else None)
        except ValueError:
            layout = None
        return f"  {layout}" if layout is not None else ""
    if field in _INTERRUPTION_FIELDS:
        info = InterruptionInfo.decode(value)
        return f"  vector {info.vector} {info.type.name}" + (" +error code" if info.deliver_error_code else "")
    return ""


def record_line(record: TraceRecord) -> str:
    """One exit from the history: number, reason, RIP, payload, decoded qualification."""
    parts = [f"#{record.seq}", f"vcpu{record.vcpu}", f"{record.reason.name}({int(record.reason)})",
             f"rip={record.rip:#x}", f"insns={record.instructions}"]
    if record.qualification:
        parts.append(f"qual={record.qualification:#x}")
    for name, value in record.payload_dict().items():
        if value is not None:
            parts.append(f"{name}={value:#x}" if isinstance(value, int) and not isinstance(value, bool)
                         else f"{name}={value}")
    if record.injected is not None:
        parts.append(f"injected={record.injected}")
    decoded = decoded_qualification(record)
    if decoded:
        parts.append("{" + ", ".join(f"{key}: {_short(value)}" for key, value in decoded.items()) + "}")
    return " ".join(parts)


def _short(value: object) -> str:
    return f"{value:#x}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def read_memory(vcpu: "VCpu", address: int, length: int, physical: bool) -> bytes:
    """Guest memory by linear address (the guest's own translation) or guest-physical."""
    if physical:
        return vcpu.memory.read(_gpa_to_hpa(vcpu, address), length)
    return vcpu.read_linear(address, length, MemoryAccess.READ)


def _gpa_to_hpa(vcpu: "VCpu", gpa: int) -> int:
    """Guest-physical through the vCPU's second-level translation, paging as if off."""
    from vtemu.machine.translation import PagingRegs
    flat = PagingRegs(0, 0, 0, 0)
    fill = vcpu.translator.translate(flat, gpa & ~0xFFF, MemoryAccess.READ, False)
    return fill.hpa | (gpa & 0xFFF)


def memory_lines(vcpu: "VCpu", address: int, count: int, unit: str, physical: bool) -> list[str]:
    """`x/N[bwdq] ADDR`: N units, eight bytes' worth per line."""
    size = SIZES[unit]
    data = read_memory(vcpu, address, count * size, physical)
    per_line = max(1, 16 // size)
    lines = []
    for start in range(0, count, per_line):
        chunk = data[start * size:(start + per_line) * size]
        words = [int.from_bytes(chunk[i:i + size], "little") for i in range(0, len(chunk), size)]
        prefix = "p:" if physical else ""
        lines.append(f"{prefix}{address + start * size:#014x}: " +
                     " ".join(f"{word:0{2 * size}x}" for word in words))
    return lines


def disassembly_lines(vcpu: "VCpu", linear: int | None, count: int) -> list[str]:
    """Capstone in the CPU's current code size; the addresses shown are linear."""
    mode = vcpu.code_mode()
    cs_base = vcpu.segment(Seg.CS).base
    here = vcpu.linear_rip()
    start = here if linear is None else linear
    code = b""
    for offset in range(0, 16 * count, 16):
        try:
            code += vcpu.read_linear(start + offset, 16, MemoryAccess.FETCH)
        except TranslationFault:
            break
    engine = capstone.Cs(capstone.CS_ARCH_X86, _CS_MODES[mode])
    lines = []
    # Decode at the segment offset (branch targets then read as the CPU sees them).
    for insn in engine.disasm(code, (start - cs_base) & 0xFFFFFFFFFFFFFFFF, count):
        address = (insn.address + cs_base) & 0xFFFFFFFFFFFFFFFF
        marker = "=>" if address == here else "  "
        lines.append(f"{marker} {address:#012x}  {insn.bytes.hex():<20} {insn.mnemonic} {insn.op_str}".rstrip())
    if not lines:
        lines.append(f"   {start:#012x}  (not mapped or not decodable)")
    return lines
