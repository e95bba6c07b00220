"""Basic exit reasons (SDM Vol. 3D Appendix C, Table C-1) and the 32-bit exit-reason field.

The exit-reason field (SDM 24.9.1, Table 24-14 "Format of Exit Reason"):

    bits 15:0  basic exit reason
    bit 16     always 0
    bits 25:17 not currently defined (0)
    bit 26     bus lock detected ("VMM bus-lock detection"; later editions)
    bit 27     VM exit incident to enclave mode
    bit 28     pending MTF VM exit
    bit 29     VM exit from VMX root operation (SMM VM exits only)
    bit 30     not currently defined (0)
    bit 31     VM-entry failure (0 = true VM exit)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from vtemu.vmx.bits import BitStruct, bits, flag


class ExitReason(IntEnum):
    """Basic exit reasons, Table C-1; each member also carries the SDM's name and a short label.

    Numbers 35, 38, 42 and 71 are not used by the SDM.
    """

    sdm_name: str
    short_name: str

    def __new__(cls, value: int, sdm_name: str, short_name: str) -> ExitReason:
        member = int.__new__(cls, value)
        member._value_ = value
        member.sdm_name = sdm_name
        member.short_name = short_name
        return member

    EXCEPTION_OR_NMI = 0, "Exception or non-maskable interrupt (NMI)", "EXC/NMI"
    EXTERNAL_INTERRUPT = 1, "External interrupt", "EXTINT"
    TRIPLE_FAULT = 2, "Triple fault", "TRIPLE"
    INIT_SIGNAL = 3, "INIT signal", "INIT"
    SIPI = 4, "Start-up IPI (SIPI)", "SIPI"
    IO_SMI = 5, "I/O system-management interrupt (SMI)", "IO-SMI"
    OTHER_SMI = 6, "Other SMI", "SMI"
    INTERRUPT_WINDOW = 7, "Interrupt window", "INTWIN"
    NMI_WINDOW = 8, "NMI window", "NMIWIN"
    TASK_SWITCH = 9, "Task switch", "TASKSW"
    CPUID = 10, "CPUID", "CPUID"
    GETSEC = 11, "GETSEC", "GETSEC"
    HLT = 12, "HLT", "HLT"
    INVD = 13, "INVD", "INVD"
    INVLPG = 14, "INVLPG", "INVLPG"
    RDPMC = 15, "RDPMC", "RDPMC"
    RDTSC = 16, "RDTSC", "RDTSC"
    RSM = 17, "RSM", "RSM"
    VMCALL = 18, "VMCALL", "VMCALL"
    VMCLEAR = 19, "VMCLEAR", "VMCLEAR"
    VMLAUNCH = 20, "VMLAUNCH", "VMLAUNCH"
    VMPTRLD = 21, "VMPTRLD", "VMPTRLD"
    VMPTRST = 22, "VMPTRST", "VMPTRST"
    VMREAD = 23, "VMREAD", "VMREAD"
    VMRESUME = 24, "VMRESUME", "VMRESUME"
    VMWRITE = 25, "VMWRITE", "VMWRITE"
    VMXOFF = 26, "VMXOFF", "VMXOFF"
    VMXON = 27, "VMXON", "VMXON"
    CR_ACCESS = 28, "Control-register accesses", "CR"
    MOV_DR = 29, "MOV DR", "DR"
    IO_INSTRUCTION = 30, "I/O instruction", "I/O"
    RDMSR = 31, "RDMSR", "RDMSR"
    WRMSR = 32, "WRMSR", "WRMSR"
    ENTRY_FAILURE_GUEST_STATE = 33, "VM-entry failure due to invalid guest state", "BADGUEST"
    ENTRY_FAILURE_MSR_LOADING = 34, "VM-entry failure due to MSR loading", "BADMSRLOAD"
    MWAIT = 36, "MWAIT", "MWAIT"
    MONITOR_TRAP_FLAG = 37, "Monitor trap flag", "MTF"
    MONITOR = 39, "MONITOR", "MONITOR"
    PAUSE = 40, "PAUSE", "PAUSE"
    ENTRY_FAILURE_MACHINE_CHECK = 41, "VM-entry failure due to machine-check event", "BADMCE"
    TPR_BELOW_THRESHOLD = 43, "TPR below threshold", "TPR"
    APIC_ACCESS = 44, "APIC access", "APIC"
    VIRTUALIZED_EOI = 45, "Virtualized EOI", "VEOI"
    GDTR_IDTR_ACCESS = 46, "Access to GDTR or IDTR", "GDTR/IDTR"
    LDTR_TR_ACCESS = 47, "Access to LDTR or TR", "LDTR/TR"
    EPT_VIOLATION = 48, "EPT violation", "EPTV"
    EPT_MISCONFIG = 49, "EPT misconfiguration", "EPTMISC"
    INVEPT = 50, "INVEPT", "INVEPT"
    RDTSCP = 51, "RDTSCP", "RDTSCP"
    PREEMPTION_TIMER = 52, "VMX-preemption timer expired", "PTIMER"
    INVVPID = 53, "INVVPID", "INVVPID"
    WBINVD = 54, "WBINVD or WBNOINVD", "WBINVD"
    XSETBV = 55, "XSETBV", "XSETBV"
    APIC_WRITE = 56, "APIC write", "APICWR"
    RDRAND = 57, "RDRAND", "RDRAND"
    INVPCID = 58, "INVPCID", "INVPCID"
    VMFUNC = 59, "VMFUNC", "VMFUNC"
    ENCLS = 60, "ENCLS", "ENCLS"
    RDSEED = 61, "RDSEED", "RDSEED"
    PML_FULL = 62, "Page-modification log full", "PMLFULL"
    XSAVES = 63, "XSAVES", "XSAVES"
    XRSTORS = 64, "XRSTORS", "XRSTORS"
    PCONFIG = 65, "PCONFIG", "PCONFIG"
    SPP_EVENT = 66, "SPP-related event", "SPP"
    UMWAIT = 67, "UMWAIT", "UMWAIT"
    TPAUSE = 68, "TPAUSE", "TPAUSE"
    LOADIWKEY = 69, "LOADIWKEY", "LOADIWKEY"
    ENCLV = 70, "ENCLV", "ENCLV"
    ENQCMD_PASID_FAILURE = 72, "ENQCMD PASID translation failure", "ENQCMD"
    ENQCMDS_PASID_FAILURE = 73, "ENQCMDS PASID translation failure", "ENQCMDS"
    BUS_LOCK = 74, "Bus lock", "BUSLOCK"
    INSTRUCTION_TIMEOUT = 75, "Instruction timeout", "TIMEOUT"
    SEAMCALL = 76, "SEAMCALL", "SEAMCALL"
    TDCALL = 77, "TDCALL", "TDCALL"

    @property
    def is_entry_failure(self) -> bool:
        """Reasons that only VM-entry failures report (with bit 31 set; SDM 26.8)."""
        return self in _ENTRY_FAILURES


_ENTRY_FAILURES = frozenset({
    ExitReason.ENTRY_FAILURE_GUEST_STATE,
    ExitReason.ENTRY_FAILURE_MSR_LOADING,
    ExitReason.ENTRY_FAILURE_MACHINE_CHECK,
})


@dataclass(frozen=True)
class ExitReasonField(BitStruct):
    """The full 32-bit exit-reason field (SDM 24.9.1, Table 24-14)."""

    basic: ExitReason = bits(15, 0, ExitReason)
    bus_lock_detected: bool = flag(26)
    enclave_mode: bool = flag(27)
    pending_mtf: bool = flag(28)
    from_vmx_root: bool = flag(29)
    entry_failure: bool = flag(31)

    def __post_init__(self) -> None:
        if self.basic.is_entry_failure != self.entry_failure:
            bit31 = int(self.entry_failure)
            raise ValueError(f"SDM 26.8: reason {self.basic.name} and bit 31 = {bit31} disagree")

    @classmethod
    def vm_exit(cls, reason: ExitReason) -> ExitReasonField:
        """A true VM exit with no modifier bits (the common case)."""
        return cls(reason)

    @classmethod
    def entry_failed(cls, reason: ExitReason) -> ExitReasonField:
        """A VM-entry failure (SDM 26.8): bit 31 set, reason 33, 34 or 41."""
        return cls(reason, entry_failure=True)
