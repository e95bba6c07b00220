"""What each family of VM exits carries, for statistics and traces.

One small set of functions per exit family maps a decoded `VmExit` (and, where the SDM puts an
operand in a register rather than in the exit information, the vCPU's registers) to

- its breakdown key: the port, MSR, CPUID leaf, CR, hypercall code, vector or guest-physical
  page the exit is counted under in `--stats`;
- its trace payload: named values (port/size/direction/value, MSR and value, ...), read in two
  steps: operands before the handler runs (a handler may overwrite them: CPUID's EAX/ECX) and
  results after it (an IN's data, an RDMSR's value, a MOV from CR's value).

Everything is read from the typed qualification layouts and the exit's own fields, never from
its `detail` text. Functions run only when statistics or a trace were asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, NamedTuple

import unicorn.x86_const as U

from vtemu.errors import BadInput
from vtemu.machine.decode import CodeMode
from vtemu.vmx.exit import VmExit
from vtemu.vmx.interruption import ExceptionVector
from vtemu.vmx.qualifications import (CrAccessQualification, CrAccessType,
                                      EptViolationQualification, Gpr, IoDirection,
                                      IoQualification, MovDrDirection, MovDrQualification,
                                      TaskSwitchQualification)
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.vmx.cpu import VmxCpu

PAGE_MASK = ~0xFFF
_GPRS = tuple(getattr(U, f"UC_X86_REG_{gpr.name}") for gpr in Gpr)
_IO_DIRECTION = {IoDirection.IN: "in", IoDirection.OUT: "out"}
_CR_ACCESS = {CrAccessType.MOV_TO_CR: "mov to", CrAccessType.MOV_FROM_CR: "mov from",
              CrAccessType.CLTS: "clts", CrAccessType.LMSW: "lmsw"}
_DR_DIRECTION = {MovDrDirection.TO_DR: "mov to", MovDrDirection.FROM_DR: "mov from"}
_MNEMONICS = {int(vector): f"#{vector.name}" for vector in ExceptionVector}


class BreakdownKey(NamedTuple):
    """What an exit is counted under in a breakdown: e.g. ("port", 0x3F8, "out")."""

    kind: str          # port, msr, leaf, cr, dr, hypercall, vector, page, linear page
    value: int
    access: str = ""   # in/out, mov to/mov from/clts/lmsw: the part of the key that is a verb

    def label(self) -> str:
        """How tables show the key: "out 0x3f8", "msr 0xc0000080", "mov to cr3", "vector 14 (#PF)"."""
        if self.kind in ("cr", "dr"):
            return self.access if self.access in ("clts", "lmsw") else f"{self.access} {self.kind}{self.value}"
        if self.kind == "port":
            return f"{self.access} {self.value:#x}"
        if self.kind == "vector" and self.access == "exception":
            mnemonic = _MNEMONICS.get(self.value)
            return f"vector {self.value}" + (f" ({mnemonic})" if mnemonic else "")
        return f"{self.kind} {self.format_value()}"

    def format_value(self) -> str:
        """Exception vectors and register numbers in decimal, as the SDM writes them; the rest hex."""
        decimal = self.kind in ("cr", "dr") or (self.kind == "vector" and self.access == "exception")
        return str(self.value) if decimal else f"{self.value:#x}"


Operands = Callable[[VmExit, "VmxCpu"], tuple]
Results = Callable[[VmExit, "VmxCpu"], tuple]
Key = Callable[[VmExit, "VmxCpu"], "BreakdownKey | None"]


@dataclass(frozen=True)
class Family:
    """How exits of some reasons are observed. `fields` names the payload: the operands'
    values first, then the results'."""

    name: str
    fields: tuple[str, ...]
    key: Key
    operands: Operands
    results: Results | None = None


def _none(exit: VmExit, cpu: "VmxCpu") -> tuple:
    return ()


def _no_key(exit: VmExit, cpu: "VmxCpu") -> BreakdownKey | None:
    return None


def _read(cpu: "VmxCpu", register: int) -> int:
    return cpu.vcpu.read(register)


# --- I/O instructions (30): Table 27-5 ------------------------------------------------------
def _io(exit: VmExit) -> IoQualification:
    return IoQualification.decode(exit.qualification)


def io_key(exit: VmExit, cpu: "VmxCpu") -> BreakdownKey:
    io = _io(exit)
    return BreakdownKey("port", io.port, _IO_DIRECTION[io.direction])


def io_operands(exit: VmExit, cpu: "VmxCpu") -> tuple:
    io = _io(exit)
    return io.port, io.size, _IO_DIRECTION[io.direction], io.string, io.rep


def io_results(exit: VmExit, cpu: "VmxCpu") -> tuple:
    """The data: AL/AX/EAX after an IN (the handler wrote it) or for an OUT (unchanged).
    String I/O moves memory, not the accumulator: no single value."""
    io = _io(exit)
    if io.string:
        return (None,)
    return (_read(cpu, U.UC_X86_REG_RAX) & ((1 << (8 * io.size)) - 1),)


# --- RDMSR (31), WRMSR (32): ECX, EDX:EAX (SDM Vol. 2 RDMSR/WRMSR) ----------------------------
def msr_key(exit: VmExit, cpu: "VmxCpu") -> BreakdownKey:
    return BreakdownKey("msr", _read(cpu, U.UC_X86_REG_ECX))


def _edx_eax(cpu: "VmxCpu") -> int:
    return (_read(cpu, U.UC_X86_REG_EDX) << 32) | _read(cpu, U.UC_X86_REG_EAX)


def rdmsr_operands(exit: VmExit, cpu: "VmxCpu") -> tuple:
    return (_read(cpu, U.UC_X86_REG_ECX),)


def rdmsr_results(exit: VmExit, cpu: "VmxCpu") -> tuple:
    return (_edx_eax(cpu),)


def wrmsr_operands(exit: VmExit, cpu: "VmxCpu") -> tuple:
    return _read(cpu, U.UC_X86_REG_ECX), _edx_eax(cpu)


# --- CPUID (10): leaf in EAX, subleaf in ECX, both overwritten by the handler -----------------
def cpuid_key(exit: VmExit, cpu: "VmxCpu") -> BreakdownKey:
    return BreakdownKey("leaf", _read(cpu, U.UC_X86_REG_EAX))


def cpuid_operands(exit: VmExit, cpu: "VmxCpu") -> tuple:
    return _read(cpu, U.UC_X86_REG_EAX), _read(cpu, U.UC_X86_REG_ECX)


# --- control-register accesses (28): Table 27-3 ----------------------------------------------
def _cr(exit: VmExit) -> CrAccessQualification:
    return CrAccessQualification.decode(exit.qualification)


def _gpr(cpu: "VmxCpu", gpr: Gpr) -> int:
    """A MOV CR/DR register operand: 64 bits in 64-bit mode, 32 elsewhere (SDM Vol. 2 MOV CR)."""
    value = _read(cpu, _GPRS[gpr])
    return value if cpu.vcpu.code_mode() is CodeMode.BITS64 else value & 0xFFFFFFFF


def cr_key(exit: VmExit, cpu: "VmxCpu") -> BreakdownKey:
    cr = _cr(exit)
    return BreakdownKey("cr", cr.cr, _CR_ACCESS[cr.access_type])


def cr_operands(exit: VmExit, cpu: "VmxCpu") -> tuple:
    cr = _cr(exit)
    return cr.cr, _CR_ACCESS[cr.access_type]


def cr_results(exit: VmExit, cpu: "VmxCpu") -> tuple:
    """The value moved, read after the handler like an I/O exit's: MOV to CR's source register
    (the handler leaves it alone), MOV from CR's destination (the handler wrote it), LMSW's
    source data (Table 27-3); CLTS moves none."""
    cr = _cr(exit)
    if cr.access_type in (CrAccessType.MOV_TO_CR, CrAccessType.MOV_FROM_CR):
        return (_gpr(cpu, cr.gpr),)
    return (cr.lmsw_source_data if cr.access_type is CrAccessType.LMSW else None,)


# --- MOV DR (29): Table 27-4 ------------------------------------------------------------------
def dr_key(exit: VmExit, cpu: "VmxCpu") -> BreakdownKey:
    dr = MovDrQualification.decode(exit.qualification)
    return BreakdownKey("dr", dr.dr, _DR_DIRECTION[dr.direction])


def dr_operands(exit: VmExit, cpu: "VmxCpu") -> tuple:
    dr = MovDrQualification.decode(exit.qualification)
    return dr.dr, _DR_DIRECTION[dr.direction]


# --- VMCALL (18): the Hyper-V TLFS hypercall input value --------------------------------------
def hypercall_input(cpu: "VmxCpu") -> int:
    """TLFS "Hypercall Inputs": RCX in 64-bit mode, EDX:EAX otherwise. Call code bits 15:0,
    fast bit 16, rep count 43:32, rep start index 59:48."""
    if cpu.vcpu.code_mode() is CodeMode.BITS64:
        return _read(cpu, U.UC_X86_REG_RCX)
    return ((_read(cpu, U.UC_X86_REG_EDX) & 0xFFFFFFFF) << 32) | (_read(cpu, U.UC_X86_REG_EAX) & 0xFFFFFFFF)


def vmcall_key(exit: VmExit, cpu: "VmxCpu") -> BreakdownKey:
    return BreakdownKey("hypercall", hypercall_input(cpu) & 0xFFFF)


def vmcall_operands(exit: VmExit, cpu: "VmxCpu") -> tuple:
    value = hypercall_input(cpu)
    return value & 0xFFFF, bool(value >> 16 & 1), value >> 32 & 0xFFF, value >> 48 & 0xFFF


# --- exceptions and NMIs (0), external interrupts (1): the interruption information -----------
def exception_key(exit: VmExit, cpu: "VmxCpu") -> BreakdownKey | None:
    info = exit.interruption
    return None if info is None else BreakdownKey("vector", info.vector, "exception")


def exception_operands(exit: VmExit, cpu: "VmxCpu") -> tuple:
    """Vector, error code, and a #PF's linear address (its exit qualification, 27.2.1)."""
    info = exit.interruption
    if info is None:
        return None, None, None
    cr2 = exit.qualification if info.vector == ExceptionVector.PF else None
    return info.vector, exit.interruption_error, cr2


def interrupt_key(exit: VmExit, cpu: "VmxCpu") -> BreakdownKey | None:
    """The vector is known only when the exit acknowledged the interrupt (SDM 27.2.2)."""
    info = exit.interruption
    return None if info is None else BreakdownKey("vector", info.vector, "interrupt")


def interrupt_operands(exit: VmExit, cpu: "VmxCpu") -> tuple:
    info = exit.interruption
    return (None if info is None else info.vector,)


# --- EPT violations (48) and misconfigurations (49): Table 27-7, guest-physical address ------
def ept_key(exit: VmExit, cpu: "VmxCpu") -> BreakdownKey | None:
    gpa = exit.guest_physical
    return None if gpa is None else BreakdownKey("page", gpa & PAGE_MASK)


def ept_operands(exit: VmExit, cpu: "VmxCpu") -> tuple:
    access = None
    if exit.reason is ExitReason.EPT_VIOLATION:
        ept = EptViolationQualification.decode(exit.qualification)
        access = "".join(letter for letter, on in zip("rwx", (ept.read, ept.write, ept.fetch)) if on)
    return exit.guest_physical, exit.guest_linear, access


# --- INVLPG (14): the linear address is the qualification ------------------------------------
def invlpg_key(exit: VmExit, cpu: "VmxCpu") -> BreakdownKey:
    return BreakdownKey("linear page", exit.qualification & PAGE_MASK)


def invlpg_operands(exit: VmExit, cpu: "VmxCpu") -> tuple:
    return (exit.qualification,)


# --- task switch (9): Table 27-2 -------------------------------------------------------------
def task_switch_operands(exit: VmExit, cpu: "VmxCpu") -> tuple:
    task = TaskSwitchQualification.decode(exit.qualification)
    return task.selector, task.source.name.lower()


_IO = Family("io", ("port", "size", "direction", "string", "rep", "value"), io_key, io_operands,
             io_results)
_RDMSR = Family("msr", ("msr", "value"), msr_key, rdmsr_operands, rdmsr_results)
_WRMSR = Family("msr", ("msr", "value"), msr_key, wrmsr_operands)
_CPUID = Family("cpuid", ("leaf", "subleaf"), cpuid_key, cpuid_operands)
_CR = Family("cr", ("cr", "access", "value"), cr_key, cr_operands, cr_results)
_DR = Family("dr", ("dr", "access"), dr_key, dr_operands)
_VMCALL = Family("vmcall", ("hypercall", "fast", "rep_count", "rep_start"), vmcall_key,
                 vmcall_operands)
_EXCEPTION = Family("exception", ("vector", "error_code", "cr2"), exception_key, exception_operands)
_INTERRUPT = Family("ext", ("vector",), interrupt_key, interrupt_operands)
_EPT = Family("ept", ("gpa", "linear", "access"), ept_key, ept_operands)
_INVLPG = Family("invlpg", ("linear",), invlpg_key, invlpg_operands)
_TASK_SWITCH = Family("task switch", ("selector", "source"), _no_key, task_switch_operands)
NO_PAYLOAD = Family("", (), _no_key, _none)

FAMILIES: dict[ExitReason, Family] = {
    ExitReason.IO_INSTRUCTION: _IO,
    ExitReason.RDMSR: _RDMSR,
    ExitReason.WRMSR: _WRMSR,
    ExitReason.CPUID: _CPUID,
    ExitReason.CR_ACCESS: _CR,
    ExitReason.MOV_DR: _DR,
    ExitReason.VMCALL: _VMCALL,
    ExitReason.EXCEPTION_OR_NMI: _EXCEPTION,
    ExitReason.EXTERNAL_INTERRUPT: _INTERRUPT,
    ExitReason.EPT_VIOLATION: _EPT,
    ExitReason.EPT_MISCONFIG: _EPT,
    ExitReason.INVLPG: _INVLPG,
    ExitReason.TASK_SWITCH: _TASK_SWITCH,
}


def family(reason: ExitReason) -> Family:
    return FAMILIES.get(reason, NO_PAYLOAD)


def breakdown_key(exit: VmExit, cpu: "VmxCpu") -> BreakdownKey | None:
    """The key an exit is counted under, read before its handler runs."""
    return family(exit.reason).key(exit, cpu)


# --- names for filters ------------------------------------------------------------------------
_VMX_INSTRUCTIONS = (ExitReason.VMCLEAR, ExitReason.VMLAUNCH, ExitReason.VMPTRLD, ExitReason.VMPTRST,
                     ExitReason.VMREAD, ExitReason.VMRESUME, ExitReason.VMWRITE, ExitReason.VMXOFF,
                     ExitReason.VMXON, ExitReason.INVEPT, ExitReason.INVVPID, ExitReason.VMFUNC)

ALIASES: dict[str, tuple[ExitReason, ...]] = {
    "io": (ExitReason.IO_INSTRUCTION,),
    "msr": (ExitReason.RDMSR, ExitReason.WRMSR),
    "cr": (ExitReason.CR_ACCESS,),
    "dr": (ExitReason.MOV_DR,),
    "ept": (ExitReason.EPT_VIOLATION, ExitReason.EPT_MISCONFIG),
    "ext": (ExitReason.EXTERNAL_INTERRUPT,),
    "irq": (ExitReason.EXTERNAL_INTERRUPT,),
    "exc": (ExitReason.EXCEPTION_OR_NMI,),
    "exception": (ExitReason.EXCEPTION_OR_NMI,),
    "nmi": (ExitReason.EXCEPTION_OR_NMI,),
    "hypercall": (ExitReason.VMCALL,),
    "tsc": (ExitReason.RDTSC, ExitReason.RDTSCP),
    "window": (ExitReason.INTERRUPT_WINDOW, ExitReason.NMI_WINDOW),
    "triple": (ExitReason.TRIPLE_FAULT,),
    "entry": (ExitReason.ENTRY_FAILURE_GUEST_STATE, ExitReason.ENTRY_FAILURE_MSR_LOADING,
              ExitReason.ENTRY_FAILURE_MACHINE_CHECK),
    "vmx": _VMX_INSTRUCTIONS,
}


def reasons_named(name: str) -> tuple[ExitReason, ...]:
    """Exit reasons for one filter word, case-insensitive: an SDM name (IO_INSTRUCTION), the
    reason's short label (I/O, EXTINT), its number (30), or an alias (io, msr, cr, ept, ext)."""
    word = name.strip()
    lowered = word.lower()
    if lowered in ALIASES:
        return ALIASES[lowered]
    for reason in ExitReason:
        if lowered in (reason.name.lower(), reason.short_name.lower()):
            return (reason,)
    if word.isdigit() and int(word) in ExitReason._value2member_map_:
        return (ExitReason(int(word)),)
    raise BadInput(f"unknown exit reason {name!r} (use an SDM name such as IO_INSTRUCTION, its "
                   f"number, or one of: {', '.join(sorted(ALIASES))}, hlt, cpuid, rdmsr, ...)")


PAYLOAD_FIELDS: frozenset[str] = frozenset(name for fam in FAMILIES.values() for name in fam.fields)
