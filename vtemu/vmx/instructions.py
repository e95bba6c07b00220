"""Sensitive instructions in VMX non-root operation: exit, or run with native semantics.

For each instruction class the processor asks the controls (intercept.py) whether it exits.
If it does, the exit carries the SDM's qualification and instruction information. If not,
the instruction has its native behaviour: Unicorn executes most of them itself; the few it
gets wrong (CR8, shadowed CR0/CR4 reads, RDMSR/WRMSR of vtemu's MSR model, SYSCALL and
SYSENTER) are completed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import capstone.x86_const as C
import unicorn.x86_const as U

from vtemu.machine.cpustate import Seg
from vtemu.machine.decode import CodeMode, Instruction, effective_address
from vtemu.machine.fastcall import syscall, sysenter
from vtemu.machine.sites import SiteKind
from vtemu.machine.msrs import IA32_TIME_STAMP_COUNTER, IA32_TSC_AUX
from vtemu.machine.vcpu import GuestException
from vtemu.vmx.controls import PrimaryProcessorControls, SecondaryProcessorControls
from vtemu.vmx.port_io import io_instruction, string_io_instruction
from vtemu.vmx.qualifications import (AddressSize, CrAccessQualification, CrAccessType,
                                      DescriptorTableInfo, DescriptorTableInstruction, Gpr,
                                      LdtrTrInfo, LdtrTrInstruction, MemoryOperand, MovDrDirection,
                                      MovDrQualification, SegmentRegister)
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.vmx.cpu import VmxCpu

_GPR_NAMES = ["RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI"] + [f"R{n}" for n in range(8, 16)]
_WIDTH_ALIASES = {
    "RAX": ("EAX", "AX", "AL"), "RCX": ("ECX", "CX", "CL"), "RDX": ("EDX", "DX", "DL"),
    "RBX": ("EBX", "BX", "BL"), "RSP": ("ESP", "SP", "SPL"), "RBP": ("EBP", "BP", "BPL"),
    "RSI": ("ESI", "SI", "SIL"), "RDI": ("EDI", "DI", "DIL"),
}
GPR_OF_REGISTER: dict[int, Gpr] = {}
for _number, _name in enumerate(_GPR_NAMES):
    _aliases = _WIDTH_ALIASES.get(_name, (f"{_name}D", f"{_name}W", f"{_name}B"))
    for _alias in (_name, *_aliases):
        GPR_OF_REGISTER[getattr(U, f"UC_X86_REG_{_alias}")] = Gpr(_number)
REGISTER_OF_GPR = {gpr: getattr(U, f"UC_X86_REG_{name}") for gpr, name in zip(Gpr, _GPR_NAMES)}
CONTROL_REGISTERS = {getattr(U, f"UC_X86_REG_CR{n}"): n for n in (0, 2, 3, 4, 8)}
DEBUG_REGISTERS = {getattr(U, f"UC_X86_REG_DR{n}"): n for n in range(8)}
SEGMENT_OF_REGISTER = {getattr(U, f"UC_X86_REG_{name}"): SegmentRegister[name]
                       for name in ("ES", "CS", "SS", "DS", "FS", "GS")}
_ADDRESS_SIZES = {2: AddressSize.BITS16, 4: AddressSize.BITS32, 8: AddressSize.BITS64}
_DESCRIPTOR_OPS = {C.X86_INS_SGDT: DescriptorTableInstruction.SGDT,
                   C.X86_INS_SIDT: DescriptorTableInstruction.SIDT,
                   C.X86_INS_LGDT: DescriptorTableInstruction.LGDT,
                   C.X86_INS_LIDT: DescriptorTableInstruction.LIDT}
UD, GP = 6, 13
# The exit each VMX instruction causes in VMX non-root operation (SDM 25.1.2, Appendix C).
VMX_INSTRUCTION_EXITS = {
    C.X86_INS_VMCALL: ExitReason.VMCALL, C.X86_INS_VMCLEAR: ExitReason.VMCLEAR,
    C.X86_INS_VMLAUNCH: ExitReason.VMLAUNCH, C.X86_INS_VMPTRLD: ExitReason.VMPTRLD,
    C.X86_INS_VMPTRST: ExitReason.VMPTRST, C.X86_INS_VMREAD: ExitReason.VMREAD,
    C.X86_INS_VMRESUME: ExitReason.VMRESUME, C.X86_INS_VMWRITE: ExitReason.VMWRITE,
    C.X86_INS_VMXOFF: ExitReason.VMXOFF, C.X86_INS_VMXON: ExitReason.VMXON,
    C.X86_INS_INVEPT: ExitReason.INVEPT, C.X86_INS_INVVPID: ExitReason.INVVPID,
    C.X86_INS_VMFUNC: ExitReason.VMFUNC,
}
_LDTR_TR_OPS = {C.X86_INS_SLDT: LdtrTrInstruction.SLDT, C.X86_INS_STR: LdtrTrInstruction.STR,
                C.X86_INS_LLDT: LdtrTrInstruction.LLDT, C.X86_INS_LTR: LdtrTrInstruction.LTR}


def handle(cpu: "VmxCpu", kind: SiteKind, insn: Instruction) -> None:
    if _privilege_fault(cpu, kind, insn):
        # Faults based on privilege level come before VM exits (SDM 26.1.1).
        raise GuestException(GP, 0)
    HANDLERS[kind](cpu, insn)


# Kinds whose every instruction needs CPL 0 (SDM Vol. 2, each instruction's protected-mode #GP(0)).
_RING0_KINDS = frozenset({SiteKind.RDMSR, SiteKind.WRMSR, SiteKind.MOV_CR, SiteKind.CLTS,
                          SiteKind.LMSW, SiteKind.MOV_DR, SiteKind.INVLPG, SiteKind.INVD,
                          SiteKind.WBINVD, SiteKind.XSETBV})
# Of the descriptor-table kinds only the loads are privileged (the stores are not, without UMIP).
_RING0_LOADS = frozenset({C.X86_INS_LGDT, C.X86_INS_LIDT, C.X86_INS_LLDT, C.X86_INS_LTR})
CR4_TSD, CR4_PCE = 1 << 2, 1 << 8


def _privilege_fault(cpu: "VmxCpu", kind: SiteKind, insn: Instruction) -> bool:
    if kind not in _PRIVILEGE_CHECKED or cpu.vcpu.context.load().cpl == 0:
        return False
    if kind in _RING0_KINDS:
        return True
    if kind in (SiteKind.DESCRIPTOR_TABLE, SiteKind.LDTR_TR):
        return insn.id in _RING0_LOADS
    if kind is SiteKind.RDPMC:
        return not cpu.vcpu.read(U.UC_X86_REG_CR4) & CR4_PCE
    return bool(cpu.vcpu.read(U.UC_X86_REG_CR4) & CR4_TSD)     # RDTSC, RDTSCP


_PRIVILEGE_CHECKED = _RING0_KINDS | {SiteKind.DESCRIPTOR_TABLE, SiteKind.LDTR_TR, SiteKind.RDPMC,
                                     SiteKind.RDTSC, SiteKind.RDTSCP}


# --- MSRs (25.1.3; native behaviour from the MSR model) ------------------------------------

def rdmsr(cpu: "VmxCpu", insn: Instruction) -> None:
    msr = cpu.vcpu.read(U.UC_X86_REG_ECX)
    if cpu.intercepts.msr_exits(msr, write=False):
        cpu.exit_instruction(ExitReason.RDMSR, insn, detail=f"msr {msr:#x}")
        return
    # SDM 26.3: with TSC offsetting a RDMSR of the TSC, like RDTSC, sees TSC + offset.
    value = cpu.guest_tsc() if msr == IA32_TIME_STAMP_COUNTER else cpu.msrs.read(msr)
    cpu.vcpu.write(U.UC_X86_REG_RAX, value & 0xFFFFFFFF)
    cpu.vcpu.write(U.UC_X86_REG_RDX, value >> 32)
    cpu.complete(insn)


def wrmsr(cpu: "VmxCpu", insn: Instruction) -> None:
    msr = cpu.vcpu.read(U.UC_X86_REG_ECX)
    if cpu.intercepts.msr_exits(msr, write=True):
        cpu.exit_instruction(ExitReason.WRMSR, insn, detail=f"msr {msr:#x}")
        return
    value = (cpu.vcpu.read(U.UC_X86_REG_EDX) << 32) | cpu.vcpu.read(U.UC_X86_REG_EAX)
    cpu.msrs.write(msr, value)
    cpu.complete(insn)


# --- control registers (Table 27-3) ---------------------------------------------------------

def mov_cr(cpu: "VmxCpu", insn: Instruction) -> None:
    first, second = insn.registers[:2]
    if first in CONTROL_REGISTERS:
        _mov_to_cr(cpu, insn, CONTROL_REGISTERS[first], second)
    else:
        _mov_from_cr(cpu, insn, CONTROL_REGISTERS[second], first)


def _cr_qualification(cr: int, access: CrAccessType, register: int) -> int:
    return CrAccessQualification(cr, access, gpr=GPR_OF_REGISTER[register]).encode()


def _mov_to_cr(cpu: "VmxCpu", insn: Instruction, cr: int, source: int) -> None:
    value = cpu.vcpu.read(REGISTER_OF_GPR[GPR_OF_REGISTER[source]])
    if insn.mode is not CodeMode.BITS64:
        value &= 0xFFFFFFFF
    if cpu.intercepts.cr_write_exits(cr, value):
        qualification = _cr_qualification(cr, CrAccessType.MOV_TO_CR, source)
        cpu.exit_instruction(ExitReason.CR_ACCESS, insn, qualification, detail=f"mov to cr{cr}")
    elif cr == 8:
        if value >> 4:
            raise GuestException(GP, 0)   # CR8 bits 63:4 are reserved (SDM Vol. 2 MOV CR)
        cpu.vcpu.tpr = value
        cpu.complete(insn)


def _mov_from_cr(cpu: "VmxCpu", insn: Instruction, cr: int, destination: int) -> None:
    if cpu.intercepts.cr_read_exits(cr):
        qualification = _cr_qualification(cr, CrAccessType.MOV_FROM_CR, destination)
        cpu.exit_instruction(ExitReason.CR_ACCESS, insn, qualification, detail=f"mov from cr{cr}")
        return
    if cr == 8:
        value = cpu.vcpu.tpr
    elif cr in (0, 4) and (cpu.intercepts.cr0_mask if cr == 0 else cpu.intercepts.cr4_mask):
        real = cpu.vcpu.read(U.UC_X86_REG_CR0 if cr == 0 else U.UC_X86_REG_CR4)
        value = cpu.intercepts.shadowed(cr, real)
    else:
        return  # native
    cpu.vcpu.write(REGISTER_OF_GPR[GPR_OF_REGISTER[destination]], value)
    cpu.complete(insn)


def clts(cpu: "VmxCpu", insn: Instruction) -> None:
    if cpu.intercepts.clts_exits():
        qualification = CrAccessQualification(0, CrAccessType.CLTS).encode()
        cpu.exit_instruction(ExitReason.CR_ACCESS, insn, qualification, detail="clts")


def lmsw(cpu: "VmxCpu", insn: Instruction) -> None:
    source, linear = _word_operand(cpu, insn)
    if cpu.intercepts.lmsw_exits(source):
        qualification = CrAccessQualification(0, CrAccessType.LMSW, lmsw_memory_operand=linear is not None,
                                              lmsw_source_data=source).encode()
        cpu.exit_instruction(ExitReason.CR_ACCESS, insn, qualification, linear=linear, detail="lmsw")


def smsw(cpu: "VmxCpu", insn: Instruction) -> None:
    """SMSW reads CR0 through the read shadow, like MOV from CR0 (SDM 26.6)."""
    value = cpu.intercepts.shadowed(0, cpu.vcpu.read(U.UC_X86_REG_CR0))
    if insn.memory is None:
        cpu.vcpu.write(insn.registers[0], value & 0xFFFFFFFF)  # a 16-bit register id takes 15:0
    else:
        cpu.vcpu.write_linear(operand_linear(cpu, insn), (value & 0xFFFF).to_bytes(2, "little"),
                              user=cpu.vcpu.context.load().cpl == 3)
    cpu.complete(insn)


def _word_operand(cpu: "VmxCpu", insn: Instruction) -> tuple[int, int | None]:
    """LMSW's 16-bit source and, for a memory operand, its linear address."""
    if insn.memory is None:
        return cpu.vcpu.read(insn.registers[0]) & 0xFFFF, None
    linear = operand_linear(cpu, insn)
    return int.from_bytes(cpu.vcpu.read_linear(linear, 2), "little"), linear


def mov_dr(cpu: "VmxCpu", insn: Instruction) -> None:
    first, second = insn.registers[:2]
    to_dr = first in DEBUG_REGISTERS
    dr, register = (DEBUG_REGISTERS[first], second) if to_dr else (DEBUG_REGISTERS[second], first)
    direction = MovDrDirection.TO_DR if to_dr else MovDrDirection.FROM_DR
    qualification = MovDrQualification(dr, direction, GPR_OF_REGISTER[register]).encode()
    cpu.exit_instruction(ExitReason.MOV_DR, insn, qualification, detail=f"dr{dr}")


# --- memory-operand instructions -------------------------------------------------------------

def operand_linear(cpu: "VmxCpu", insn: Instruction) -> int:
    """Linear address of the memory operand: segment base + effective address."""
    assert insn.memory is not None
    offset = effective_address(insn, cpu.vcpu.read)
    segment = SEGMENT_OF_REGISTER[insn.memory.segment]
    base = 0
    if insn.mode is not CodeMode.BITS64 or segment in (SegmentRegister.FS, SegmentRegister.GS):
        base = cpu.vcpu.segment(Seg(int(segment))).base
    return (base + offset) & 0xFFFFFFFFFFFFFFFF


def memory_operand_info(insn: Instruction) -> MemoryOperand:
    """The memory-operand part of the VM-exit instruction information (Tables 27-10, 27-11)."""
    memory = insn.memory
    assert memory is not None
    return MemoryOperand(
        address_size=_ADDRESS_SIZES[insn.addr_size],
        segment=SEGMENT_OF_REGISTER[memory.segment],
        base=GPR_OF_REGISTER.get(memory.base) if memory.base else None,
        index=GPR_OF_REGISTER.get(memory.index) if memory.index else None,
        scaling=memory.scale.bit_length() - 1 if memory.index else 0)


def invlpg(cpu: "VmxCpu", insn: Instruction) -> None:
    linear = operand_linear(cpu, insn)
    cpu.exit_instruction(ExitReason.INVLPG, insn, qualification=linear, linear=linear,
                         detail=f"page {linear & ~0xFFF:#x}")


def descriptor_table(cpu: "VmxCpu", insn: Instruction) -> None:
    info = DescriptorTableInfo(memory_operand_info(insn), _DESCRIPTOR_OPS[insn.id],
                               operand_size_32=insn.mode is not CodeMode.BITS16)
    displacement = insn.memory.disp if insn.memory else 0
    cpu.exit_instruction(ExitReason.GDTR_IDTR_ACCESS, insn, displacement & 0xFFFFFFFFFFFFFFFF,
                         info=info.encode(), detail=insn.mnemonic)


def ldtr_tr(cpu: "VmxCpu", insn: Instruction) -> None:
    operand = memory_operand_info(insn) if insn.memory else GPR_OF_REGISTER[insn.registers[0]]
    info = LdtrTrInfo(operand, _LDTR_TR_OPS[insn.id])
    displacement = insn.memory.disp if insn.memory else 0
    cpu.exit_instruction(ExitReason.LDTR_TR_ACCESS, insn, displacement & 0xFFFFFFFFFFFFFFFF,
                         info=info.encode(), detail=insn.mnemonic)


# --- instructions that exit when their control is set (or always) -----------------------------

def _always(reason: ExitReason) -> Callable[["VmxCpu", Instruction], None]:
    def exits(cpu: "VmxCpu", insn: Instruction) -> None:
        cpu.exit_instruction(reason, insn, detail=insn.mnemonic)
    return exits


def pause(cpu: "VmxCpu", insn: Instruction) -> None:
    """PAUSE exiting makes every PAUSE exit; otherwise PAUSE-loop exiting watches PAUSEs at
    CPL 0 and exits once a loop of them has spun longer than PLE_Window (SDM 25.1.3)."""
    intercepts = cpu.intercepts
    if PrimaryProcessorControls.PAUSE_EXITING in intercepts.primary:
        cpu.exit_instruction(ExitReason.PAUSE, insn, detail="pause")
    elif (SecondaryProcessorControls.PAUSE_LOOP_EXITING in intercepts.secondary
          and cpu.vcpu.context.load().cpl == 0
          and cpu.pause_loop.exits(cpu.tsc.read(), intercepts.ple_gap, intercepts.ple_window)):
        cpu.exit_instruction(ExitReason.PAUSE, insn, detail="pause loop")


@dataclass
class PauseLoop:
    """PAUSE-loop exiting's bookkeeping, in TSC ticks (SDM 25.1.3): a PAUSE more than PLE_Gap
    after the previous one (or the first since VM entry) starts a loop; a PAUSE more than
    PLE_Window after the loop's start exits."""

    last: int | None = None
    loop_start: int = 0

    def exits(self, now: int, gap: int, window: int) -> bool:
        if self.last is None or now - self.last > gap:
            self.loop_start = now
        self.last = now
        return now - self.loop_start > window

    def forget(self) -> None:
        """A VM entry: the next PAUSE is the first of a loop."""
        self.last = None


def cpuid(cpu: "VmxCpu", insn: Instruction) -> None:
    """CPUID exits unconditionally (SDM 25.1.2)."""
    leaf = cpu.vcpu.read(U.UC_X86_REG_EAX)
    cpu.exit_instruction(ExitReason.CPUID, insn, detail=f"leaf {leaf:#x}")


def rdtsc(cpu: "VmxCpu", insn: Instruction) -> None:
    """RDTSC/RDTSCP: exit with RDTSC exiting, else the guest's TSC = TSC + offset (SDM 25.3)."""
    with_aux = insn.id == C.X86_INS_RDTSCP
    if with_aux and SecondaryProcessorControls.ENABLE_RDTSCP not in cpu.intercepts.secondary:
        raise GuestException(UD)
    if PrimaryProcessorControls.RDTSC_EXITING in cpu.intercepts.primary:
        reason = ExitReason.RDTSCP if with_aux else ExitReason.RDTSC
        cpu.exit_instruction(reason, insn, detail=insn.mnemonic)
        return
    value = cpu.guest_tsc()
    cpu.vcpu.write(U.UC_X86_REG_RAX, value & 0xFFFFFFFF)
    cpu.vcpu.write(U.UC_X86_REG_RDX, value >> 32)
    if with_aux:
        cpu.vcpu.write(U.UC_X86_REG_RCX, cpu.msrs.read(IA32_TSC_AUX) & 0xFFFFFFFF)
    cpu.complete(insn)


def vmx_instruction(cpu: "VmxCpu", insn: Instruction) -> None:
    """VMCALL and the VMX instructions exit unconditionally in VMX non-root operation (25.1.2)."""
    cpu.exit_instruction(VMX_INSTRUCTION_EXITS[insn.id], insn, detail=insn.mnemonic)


def fast_system_call(cpu: "VmxCpu", insn: Instruction) -> None:
    """Never an exit; Unicorn skips the ring transition, so the processor does it (fastcall.py).
    The stop came before the instruction, so performing it is what retires it (a fault
    raised instead retires nothing)."""
    def perform() -> None:
        if insn.id == C.X86_INS_SYSCALL:
            syscall(cpu.vcpu, insn.size)
        else:
            sysenter(cpu.vcpu)
        cpu.vcpu.retire_emulated()
    cpu.perform_after_stop(perform)


HANDLERS: dict[SiteKind, Callable[["VmxCpu", Instruction], None]] = {
    SiteKind.RDMSR: rdmsr,
    SiteKind.WRMSR: wrmsr,
    SiteKind.MOV_CR: mov_cr,
    SiteKind.CLTS: clts,
    SiteKind.LMSW: lmsw,
    SiteKind.SMSW: smsw,
    SiteKind.MOV_DR: mov_dr,
    SiteKind.INVLPG: invlpg,
    SiteKind.DESCRIPTOR_TABLE: descriptor_table,
    SiteKind.LDTR_TR: ldtr_tr,
    SiteKind.INVD: _always(ExitReason.INVD),
    SiteKind.WBINVD: _always(ExitReason.WBINVD),
    SiteKind.XSETBV: _always(ExitReason.XSETBV),
    SiteKind.PAUSE: pause,
    SiteKind.MONITOR: _always(ExitReason.MONITOR),
    SiteKind.MWAIT: _always(ExitReason.MWAIT),
    SiteKind.RDPMC: _always(ExitReason.RDPMC),
    SiteKind.SYSCALL: fast_system_call,
    SiteKind.SYSENTER: fast_system_call,
    SiteKind.IO: io_instruction,
    SiteKind.STRING_IO: string_io_instruction,
    SiteKind.CPUID: cpuid,
    SiteKind.RDTSC: rdtsc,
    SiteKind.RDTSCP: rdtsc,
    SiteKind.VMX: vmx_instruction,
}
