"""VM-execution, VM-exit and VM-entry controls, and the VMX capability MSRs vtemu reports.

Control bit positions: SDM 24.6.1 (Table 24-5, pin-based), 24.6.2 (Table 24-6 primary and
Table 24-7 secondary processor-based), 24.7.1 (Table 24-10, VM-exit) and 24.8.1 (Table 24-12,
VM-entry). The capability MSRs follow Appendix A: `VmxCapabilities` describes what vtemu's
VMX implementation supports and derives every IA32_VMX_* value from that description, so the
MSRs a guest hypervisor reads and the checks VM entry performs can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum, IntFlag

from vtemu.vmx.bits import BitStruct, bits, flag, ones
from vtemu.vmx.fields import VmcsField, highest_index
from vtemu.vmx.state_formats import ActivityState, Cr0, Cr4


class PinBasedControls(IntFlag):
    """SDM 24.6.1, Table 24-5."""

    EXTERNAL_INTERRUPT_EXITING = 1 << 0
    NMI_EXITING = 1 << 3
    VIRTUAL_NMIS = 1 << 5
    ACTIVATE_PREEMPTION_TIMER = 1 << 6
    PROCESS_POSTED_INTERRUPTS = 1 << 7


class PrimaryProcessorControls(IntFlag):
    """SDM 24.6.2, Table 24-6."""

    INTERRUPT_WINDOW_EXITING = 1 << 2
    USE_TSC_OFFSETTING = 1 << 3
    HLT_EXITING = 1 << 7
    INVLPG_EXITING = 1 << 9
    MWAIT_EXITING = 1 << 10
    RDPMC_EXITING = 1 << 11
    RDTSC_EXITING = 1 << 12
    CR3_LOAD_EXITING = 1 << 15
    CR3_STORE_EXITING = 1 << 16
    ACTIVATE_TERTIARY_CONTROLS = 1 << 17
    CR8_LOAD_EXITING = 1 << 19
    CR8_STORE_EXITING = 1 << 20
    USE_TPR_SHADOW = 1 << 21
    NMI_WINDOW_EXITING = 1 << 22
    MOV_DR_EXITING = 1 << 23
    UNCONDITIONAL_IO_EXITING = 1 << 24
    USE_IO_BITMAPS = 1 << 25
    MONITOR_TRAP_FLAG = 1 << 27
    USE_MSR_BITMAPS = 1 << 28
    MONITOR_EXITING = 1 << 29
    PAUSE_EXITING = 1 << 30
    ACTIVATE_SECONDARY_CONTROLS = 1 << 31


class SecondaryProcessorControls(IntFlag):
    """SDM 24.6.2, Table 24-7 (bits 21 and 29 are left out: vtemu has no use for them)."""

    VIRTUALIZE_APIC_ACCESSES = 1 << 0
    ENABLE_EPT = 1 << 1
    DESCRIPTOR_TABLE_EXITING = 1 << 2
    ENABLE_RDTSCP = 1 << 3
    VIRTUALIZE_X2APIC_MODE = 1 << 4
    ENABLE_VPID = 1 << 5
    WBINVD_EXITING = 1 << 6
    UNRESTRICTED_GUEST = 1 << 7
    APIC_REGISTER_VIRTUALIZATION = 1 << 8
    VIRTUAL_INTERRUPT_DELIVERY = 1 << 9
    PAUSE_LOOP_EXITING = 1 << 10
    RDRAND_EXITING = 1 << 11
    ENABLE_INVPCID = 1 << 12
    ENABLE_VM_FUNCTIONS = 1 << 13
    VMCS_SHADOWING = 1 << 14
    ENABLE_ENCLS_EXITING = 1 << 15
    RDSEED_EXITING = 1 << 16
    ENABLE_PML = 1 << 17
    EPT_VIOLATION_VE = 1 << 18
    CONCEAL_VMX_FROM_PT = 1 << 19
    ENABLE_XSAVES_XRSTORS = 1 << 20
    MODE_BASED_EPT_EXECUTE = 1 << 22
    SUB_PAGE_WRITE_PERMISSIONS = 1 << 23
    PT_USES_GUEST_PHYSICAL_ADDRESSES = 1 << 24
    USE_TSC_SCALING = 1 << 25
    ENABLE_USER_WAIT_AND_PAUSE = 1 << 26
    ENABLE_PCONFIG = 1 << 27
    ENABLE_ENCLV_EXITING = 1 << 28
    VMM_BUS_LOCK_DETECTION = 1 << 30
    INSTRUCTION_TIMEOUT = 1 << 31


class ExitControls(IntFlag):
    """SDM 24.7.1, Table 24-10 (primary VM-exit controls)."""

    SAVE_DEBUG_CONTROLS = 1 << 2
    HOST_ADDRESS_SPACE_SIZE = 1 << 9
    LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 12
    ACKNOWLEDGE_INTERRUPT_ON_EXIT = 1 << 15
    SAVE_IA32_PAT = 1 << 18
    LOAD_IA32_PAT = 1 << 19
    SAVE_IA32_EFER = 1 << 20
    LOAD_IA32_EFER = 1 << 21
    SAVE_PREEMPTION_TIMER = 1 << 22
    CLEAR_IA32_BNDCFGS = 1 << 23
    CONCEAL_VMX_FROM_PT = 1 << 24
    CLEAR_IA32_RTIT_CTL = 1 << 25
    CLEAR_IA32_LBR_CTL = 1 << 26
    CLEAR_UINV = 1 << 27
    LOAD_CET_STATE = 1 << 28
    LOAD_PKRS = 1 << 29
    SAVE_IA32_PERF_GLOBAL_CTRL = 1 << 30
    ACTIVATE_SECONDARY_CONTROLS = 1 << 31


class EntryControls(IntFlag):
    """SDM 24.8.1, Table 24-12."""

    LOAD_DEBUG_CONTROLS = 1 << 2
    IA32E_MODE_GUEST = 1 << 9
    ENTRY_TO_SMM = 1 << 10
    DEACTIVATE_DUAL_MONITOR = 1 << 11
    LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 13
    LOAD_IA32_PAT = 1 << 14
    LOAD_IA32_EFER = 1 << 15
    LOAD_IA32_BNDCFGS = 1 << 16
    CONCEAL_VMX_FROM_PT = 1 << 17
    LOAD_IA32_RTIT_CTL = 1 << 18
    LOAD_UINV = 1 << 19
    LOAD_CET_STATE = 1 << 20
    LOAD_IA32_LBR_CTL = 1 << 21
    LOAD_PKRS = 1 << 22


Control = (
    PinBasedControls | PrimaryProcessorControls | SecondaryProcessorControls | ExitControls | EntryControls
)


class VmxMsr(IntEnum):
    """VMX capability MSR indexes (SDM Appendix A, Vol. 4 Table 2-2)."""

    BASIC = 0x480
    PINBASED_CTLS = 0x481
    PROCBASED_CTLS = 0x482
    EXIT_CTLS = 0x483
    ENTRY_CTLS = 0x484
    MISC = 0x485
    CR0_FIXED0 = 0x486
    CR0_FIXED1 = 0x487
    CR4_FIXED0 = 0x488
    CR4_FIXED1 = 0x489
    VMCS_ENUM = 0x48A
    PROCBASED_CTLS2 = 0x48B
    EPT_VPID_CAP = 0x48C
    TRUE_PINBASED_CTLS = 0x48D
    TRUE_PROCBASED_CTLS = 0x48E
    TRUE_EXIT_CTLS = 0x48F
    TRUE_ENTRY_CTLS = 0x490
    VMFUNC = 0x491
    PROCBASED_CTLS3 = 0x492
    EXIT_CTLS2 = 0x493


class ControlKind(Enum):
    """The five 32-bit control vectors VM entry checks against capability MSRs (26.2.1)."""

    PIN = "pin-based VM-execution controls"
    PRIMARY = "primary processor-based VM-execution controls"
    SECONDARY = "secondary processor-based VM-execution controls"
    EXIT = "VM-exit controls"
    ENTRY = "VM-entry controls"


@dataclass(frozen=True)
class ControlClass:
    """Where a control vector lives and how the SDM reports its allowed settings."""

    flags: type[IntFlag]
    field: VmcsField
    msr: VmxMsr
    true_msr: VmxMsr | None
    default1: int  # Appendix A.2: bits reserved-to-1 before the TRUE MSRs existed


CONTROL_CLASSES: dict[ControlKind, ControlClass] = {
    # A.3.1: pin-based default1 bits are 1, 2 and 4.
    ControlKind.PIN: ControlClass(
        PinBasedControls, VmcsField.PIN_BASED_VM_EXEC_CONTROL,
        VmxMsr.PINBASED_CTLS, VmxMsr.TRUE_PINBASED_CTLS, 0x0000_0016,
    ),
    # A.3.2: primary default1 bits are 1, 4-6, 8, 13-16 and 26.
    ControlKind.PRIMARY: ControlClass(
        PrimaryProcessorControls, VmcsField.CPU_BASED_VM_EXEC_CONTROL,
        VmxMsr.PROCBASED_CTLS, VmxMsr.TRUE_PROCBASED_CTLS, 0x0401_E172,
    ),
    # A.3.3: the secondary controls have no default1 class and no TRUE MSR.
    ControlKind.SECONDARY: ControlClass(
        SecondaryProcessorControls, VmcsField.SECONDARY_VM_EXEC_CONTROL, VmxMsr.PROCBASED_CTLS2, None, 0
    ),
    # A.4: VM-exit default1 bits are 0-8, 10, 11, 13, 14, 16 and 17.
    ControlKind.EXIT: ControlClass(
        ExitControls, VmcsField.VM_EXIT_CONTROLS, VmxMsr.EXIT_CTLS, VmxMsr.TRUE_EXIT_CTLS, 0x0003_6DFF
    ),
    # A.5: VM-entry default1 bits are 0-8 and 12.
    ControlKind.ENTRY: ControlClass(
        EntryControls, VmcsField.VM_ENTRY_CONTROLS, VmxMsr.ENTRY_CTLS, VmxMsr.TRUE_ENTRY_CTLS, 0x0000_11FF
    ),
}
_KIND_OF_FLAGS: dict[type[IntFlag], ControlKind] = {c.flags: kind for kind, c in CONTROL_CLASSES.items()}


@dataclass(frozen=True)
class ControlCapability:
    """One allowed-settings MSR (A.3-A.5): bits 31:0 allowed 0-settings, bits 63:32 allowed 1-settings.

    `allowed0` has bit X set when control X may NOT be 0 (it must be 1); `allowed1` has bit X set
    when control X may be 1.
    """

    allowed0: int
    allowed1: int

    @classmethod
    def from_msr(cls, value: int) -> ControlCapability:
        return cls(allowed0=value & ones(32), allowed1=value >> 32)

    @property
    def msr_value(self) -> int:
        return self.allowed0 | self.allowed1 << 32

    def violations(self, value: int) -> int:
        """Bits of `value` that VM entry would reject: required-1 bits that are 0, disallowed 1s."""
        return (self.allowed0 & ~value) | (value & ~self.allowed1 & ones(32))

    def allows(self, value: int) -> bool:
        return self.violations(value) == 0


class MemoryType(IntEnum):
    """Memory-type encodings (SDM Vol. 3A 11.11.1, Table 11-8), as IA32_VMX_BASIC (A.1) and the EPTP
    (24.6.11) use them."""

    UC = 0
    WC = 1
    WT = 4
    WP = 5
    WB = 6


class EptVpidCap(IntFlag):
    """IA32_VMX_EPT_VPID_CAP bits (SDM A.10)."""

    EXECUTE_ONLY = 1 << 0
    WALK_LENGTH_4 = 1 << 6
    WALK_LENGTH_5 = 1 << 7
    MEMORY_TYPE_UC = 1 << 8
    MEMORY_TYPE_WB = 1 << 14
    PDE_2MB = 1 << 16
    PDPTE_1GB = 1 << 17
    INVEPT = 1 << 20
    ACCESSED_DIRTY = 1 << 21
    ADVANCED_EXIT_INFO = 1 << 22
    SUPERVISOR_SHADOW_STACK = 1 << 23
    INVEPT_SINGLE_CONTEXT = 1 << 25
    INVEPT_ALL_CONTEXT = 1 << 26
    INVVPID = 1 << 32
    INVVPID_INDIVIDUAL_ADDRESS = 1 << 40
    INVVPID_SINGLE_CONTEXT = 1 << 41
    INVVPID_ALL_CONTEXT = 1 << 42
    INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS = 1 << 43


_EPT_CAP_BITS = ones(32)  # A.10: bits 31:0 describe EPT, bits 43:32 describe VPID/INVVPID
_VPID_CAP_BITS = ones(12) << 32


class InveptType(IntEnum):
    """INVEPT types (SDM 28.3.3.1 / Vol. 3C 30.3 INVEPT)."""

    SINGLE_CONTEXT = 1
    ALL_CONTEXT = 2


class InvvpidType(IntEnum):
    """INVVPID types (SDM 28.3.3.1 / Vol. 3C 30.3 INVVPID)."""

    INDIVIDUAL_ADDRESS = 0
    SINGLE_CONTEXT = 1
    ALL_CONTEXT = 2
    SINGLE_CONTEXT_RETAINING_GLOBALS = 3


# Table 24-8: EPTP bits 11:8 are reserved (bit 7 enables supervisor shadow-stack control).
EPTP_RESERVED_LOW = ones(4) << 8


@dataclass(frozen=True)
class Eptp(BitStruct):
    """The extended-page-table pointer (SDM 24.6.11, Table 24-8)."""

    memory_type: int = bits(2, 0)
    walk_length: int = bits(5, 3, lambda v: v + 1, to_raw=lambda length: length - 1)
    accessed_dirty: bool = flag(6)
    supervisor_shadow_stack: bool = flag(7)
    pml4_frame: int = bits(63, 12, default=0)

    @property
    def pml4_address(self) -> int:
        return self.pml4_frame << 12


# --- which VMCS fields exist on a processor (Appendix B footnotes) ---------------------------------
# A field listed here exists only if at least one of its controls has an allowed 1-setting; fields
# not listed exist on every processor. An empty tuple marks a feature vtemu does not model at all.
_FIELD_REQUIRES: dict[VmcsField, tuple[Control, ...]] = {
    VmcsField.VIRTUAL_PROCESSOR_ID: (SecondaryProcessorControls.ENABLE_VPID,),
    VmcsField.POSTED_INTR_NV: (PinBasedControls.PROCESS_POSTED_INTERRUPTS,),
    VmcsField.EPTP_INDEX: (SecondaryProcessorControls.EPT_VIOLATION_VE,),
    VmcsField.HLAT_PREFIX_SIZE: (PrimaryProcessorControls.ACTIVATE_TERTIARY_CONTROLS,),
    VmcsField.LAST_PID_POINTER_INDEX: (PrimaryProcessorControls.ACTIVATE_TERTIARY_CONTROLS,),
    VmcsField.GUEST_INTR_STATUS: (SecondaryProcessorControls.VIRTUAL_INTERRUPT_DELIVERY,),
    VmcsField.GUEST_PML_INDEX: (SecondaryProcessorControls.ENABLE_PML,),
    VmcsField.GUEST_UINV: (ExitControls.CLEAR_UINV, EntryControls.LOAD_UINV),
    VmcsField.PML_ADDRESS: (SecondaryProcessorControls.ENABLE_PML,),
    VmcsField.VIRTUAL_APIC_PAGE_ADDR: (PrimaryProcessorControls.USE_TPR_SHADOW,),
    VmcsField.APIC_ACCESS_ADDR: (SecondaryProcessorControls.VIRTUALIZE_APIC_ACCESSES,),
    VmcsField.POSTED_INTR_DESC_ADDR: (PinBasedControls.PROCESS_POSTED_INTERRUPTS,),
    VmcsField.VM_FUNCTION_CONTROL: (SecondaryProcessorControls.ENABLE_VM_FUNCTIONS,),
    VmcsField.EPT_POINTER: (SecondaryProcessorControls.ENABLE_EPT,),
    VmcsField.EOI_EXIT_BITMAP0: (SecondaryProcessorControls.VIRTUAL_INTERRUPT_DELIVERY,),
    VmcsField.EOI_EXIT_BITMAP1: (SecondaryProcessorControls.VIRTUAL_INTERRUPT_DELIVERY,),
    VmcsField.EOI_EXIT_BITMAP2: (SecondaryProcessorControls.VIRTUAL_INTERRUPT_DELIVERY,),
    VmcsField.EOI_EXIT_BITMAP3: (SecondaryProcessorControls.VIRTUAL_INTERRUPT_DELIVERY,),
    VmcsField.EPTP_LIST_ADDRESS: (SecondaryProcessorControls.ENABLE_VM_FUNCTIONS,),
    VmcsField.VMREAD_BITMAP: (SecondaryProcessorControls.VMCS_SHADOWING,),
    VmcsField.VMWRITE_BITMAP: (SecondaryProcessorControls.VMCS_SHADOWING,),
    VmcsField.VE_INFORMATION_ADDRESS: (SecondaryProcessorControls.EPT_VIOLATION_VE,),
    VmcsField.XSS_EXIT_BITMAP: (SecondaryProcessorControls.ENABLE_XSAVES_XRSTORS,),
    VmcsField.ENCLS_EXITING_BITMAP: (SecondaryProcessorControls.ENABLE_ENCLS_EXITING,),
    VmcsField.SPPT_POINTER: (SecondaryProcessorControls.SUB_PAGE_WRITE_PERMISSIONS,),
    VmcsField.TSC_MULTIPLIER: (SecondaryProcessorControls.USE_TSC_SCALING,),
    VmcsField.TERTIARY_VM_EXEC_CONTROL: (PrimaryProcessorControls.ACTIVATE_TERTIARY_CONTROLS,),
    VmcsField.ENCLV_EXITING_BITMAP: (SecondaryProcessorControls.ENABLE_ENCLV_EXITING,),
    VmcsField.LOW_PASID_DIRECTORY: (),
    VmcsField.HIGH_PASID_DIRECTORY: (),
    VmcsField.SHARED_EPT_POINTER: (),
    VmcsField.PCONFIG_EXITING_BITMAP: (SecondaryProcessorControls.ENABLE_PCONFIG,),
    VmcsField.HLAT_POINTER: (PrimaryProcessorControls.ACTIVATE_TERTIARY_CONTROLS,),
    VmcsField.PID_POINTER_TABLE: (PrimaryProcessorControls.ACTIVATE_TERTIARY_CONTROLS,),
    VmcsField.SECONDARY_VM_EXIT_CONTROLS: (ExitControls.ACTIVATE_SECONDARY_CONTROLS,),
    VmcsField.GUEST_PHYSICAL_ADDRESS: (SecondaryProcessorControls.ENABLE_EPT,),
    VmcsField.GUEST_IA32_PAT: (EntryControls.LOAD_IA32_PAT, ExitControls.SAVE_IA32_PAT),
    VmcsField.GUEST_IA32_EFER: (EntryControls.LOAD_IA32_EFER, ExitControls.SAVE_IA32_EFER),
    VmcsField.GUEST_IA32_PERF_GLOBAL_CTRL: (
        EntryControls.LOAD_IA32_PERF_GLOBAL_CTRL, ExitControls.SAVE_IA32_PERF_GLOBAL_CTRL
    ),
    VmcsField.GUEST_PDPTE0: (SecondaryProcessorControls.ENABLE_EPT,),
    VmcsField.GUEST_PDPTE1: (SecondaryProcessorControls.ENABLE_EPT,),
    VmcsField.GUEST_PDPTE2: (SecondaryProcessorControls.ENABLE_EPT,),
    VmcsField.GUEST_PDPTE3: (SecondaryProcessorControls.ENABLE_EPT,),
    VmcsField.GUEST_IA32_BNDCFGS: (EntryControls.LOAD_IA32_BNDCFGS, ExitControls.CLEAR_IA32_BNDCFGS),
    VmcsField.GUEST_IA32_RTIT_CTL: (EntryControls.LOAD_IA32_RTIT_CTL, ExitControls.CLEAR_IA32_RTIT_CTL),
    VmcsField.GUEST_IA32_LBR_CTL: (EntryControls.LOAD_IA32_LBR_CTL, ExitControls.CLEAR_IA32_LBR_CTL),
    VmcsField.GUEST_IA32_PKRS: (EntryControls.LOAD_PKRS,),
    VmcsField.HOST_IA32_PAT: (ExitControls.LOAD_IA32_PAT,),
    VmcsField.HOST_IA32_EFER: (ExitControls.LOAD_IA32_EFER,),
    VmcsField.HOST_IA32_PERF_GLOBAL_CTRL: (ExitControls.LOAD_IA32_PERF_GLOBAL_CTRL,),
    VmcsField.HOST_IA32_PKRS: (ExitControls.LOAD_PKRS,),
    VmcsField.TPR_THRESHOLD: (PrimaryProcessorControls.USE_TPR_SHADOW,),
    VmcsField.SECONDARY_VM_EXEC_CONTROL: (PrimaryProcessorControls.ACTIVATE_SECONDARY_CONTROLS,),
    VmcsField.PLE_GAP: (SecondaryProcessorControls.PAUSE_LOOP_EXITING,),
    VmcsField.PLE_WINDOW: (SecondaryProcessorControls.PAUSE_LOOP_EXITING,),
    VmcsField.INSTRUCTION_TIMEOUT_CONTROL: (SecondaryProcessorControls.INSTRUCTION_TIMEOUT,),
    VmcsField.VMX_PREEMPTION_TIMER_VALUE: (PinBasedControls.ACTIVATE_PREEMPTION_TIMER,),
    VmcsField.GUEST_S_CET: (EntryControls.LOAD_CET_STATE,),
    VmcsField.GUEST_SSP: (EntryControls.LOAD_CET_STATE,),
    VmcsField.GUEST_INTR_SSP_TABLE: (EntryControls.LOAD_CET_STATE,),
    VmcsField.HOST_S_CET: (ExitControls.LOAD_CET_STATE,),
    VmcsField.HOST_SSP: (ExitControls.LOAD_CET_STATE,),
    VmcsField.HOST_INTR_SSP_TABLE: (ExitControls.LOAD_CET_STATE,),
}

# --- what vtemu supports ---------------------------------------------------------------------------
VTEMU_PIN_CONTROLS = (
    PinBasedControls.EXTERNAL_INTERRUPT_EXITING
    | PinBasedControls.NMI_EXITING
    | PinBasedControls.VIRTUAL_NMIS
    | PinBasedControls.ACTIVATE_PREEMPTION_TIMER
)
VTEMU_PRIMARY_CONTROLS = (
    PrimaryProcessorControls.INTERRUPT_WINDOW_EXITING
    | PrimaryProcessorControls.USE_TSC_OFFSETTING
    | PrimaryProcessorControls.HLT_EXITING
    | PrimaryProcessorControls.INVLPG_EXITING
    | PrimaryProcessorControls.MWAIT_EXITING
    | PrimaryProcessorControls.RDPMC_EXITING
    | PrimaryProcessorControls.RDTSC_EXITING
    | PrimaryProcessorControls.CR3_LOAD_EXITING
    | PrimaryProcessorControls.CR3_STORE_EXITING
    | PrimaryProcessorControls.CR8_LOAD_EXITING
    | PrimaryProcessorControls.CR8_STORE_EXITING
    | PrimaryProcessorControls.NMI_WINDOW_EXITING
    | PrimaryProcessorControls.MOV_DR_EXITING
    | PrimaryProcessorControls.MONITOR_TRAP_FLAG
    | PrimaryProcessorControls.UNCONDITIONAL_IO_EXITING
    | PrimaryProcessorControls.USE_IO_BITMAPS
    | PrimaryProcessorControls.USE_MSR_BITMAPS
    | PrimaryProcessorControls.MONITOR_EXITING
    | PrimaryProcessorControls.PAUSE_EXITING
    | PrimaryProcessorControls.ACTIVATE_SECONDARY_CONTROLS
)
VTEMU_SECONDARY_CONTROLS = (
    SecondaryProcessorControls.ENABLE_EPT
    | SecondaryProcessorControls.DESCRIPTOR_TABLE_EXITING
    | SecondaryProcessorControls.ENABLE_RDTSCP
    | SecondaryProcessorControls.ENABLE_VPID
    | SecondaryProcessorControls.WBINVD_EXITING
    | SecondaryProcessorControls.UNRESTRICTED_GUEST
    | SecondaryProcessorControls.PAUSE_LOOP_EXITING
)
VTEMU_EXIT_CONTROLS = (
    ExitControls.SAVE_DEBUG_CONTROLS
    | ExitControls.HOST_ADDRESS_SPACE_SIZE
    | ExitControls.ACKNOWLEDGE_INTERRUPT_ON_EXIT
    | ExitControls.SAVE_IA32_PAT
    | ExitControls.LOAD_IA32_PAT
    | ExitControls.SAVE_IA32_EFER
    | ExitControls.LOAD_IA32_EFER
    | ExitControls.SAVE_PREEMPTION_TIMER
)
VTEMU_ENTRY_CONTROLS = (
    EntryControls.LOAD_DEBUG_CONTROLS
    | EntryControls.IA32E_MODE_GUEST
    | EntryControls.LOAD_IA32_PAT
    | EntryControls.LOAD_IA32_EFER
)
# EPT: 4-level walks, UC and WB paging-structure memory types, 2 MiB and 1 GiB pages, accessed and
# dirty flags, INVEPT single- and all-context. Execute-only translations are NOT supported: an EPT
# entry with X = 1 and R = 0 is then an EPT misconfiguration (SDM 28.2.3.1), which keeps the EPT
# walker's permission model the same as the paging-structure one (no guest vtemu runs needs
# execute-only memory). Advanced EPT-violation information (bits 9-11 of the qualification) is
# left off until the MMU reports the guest paging-structure permissions it needs.
# VPID: INVVPID with all four types (a TLB flush broader than asked is always architectural).
VTEMU_EPT_VPID_CAP = (
    EptVpidCap.WALK_LENGTH_4
    | EptVpidCap.MEMORY_TYPE_UC
    | EptVpidCap.MEMORY_TYPE_WB
    | EptVpidCap.PDE_2MB
    | EptVpidCap.PDPTE_1GB
    | EptVpidCap.INVEPT
    | EptVpidCap.ACCESSED_DIRTY
    | EptVpidCap.INVEPT_SINGLE_CONTEXT
    | EptVpidCap.INVEPT_ALL_CONTEXT
    | EptVpidCap.INVVPID
    | EptVpidCap.INVVPID_INDIVIDUAL_ADDRESS
    | EptVpidCap.INVVPID_SINGLE_CONTEXT
    | EptVpidCap.INVVPID_ALL_CONTEXT
    | EptVpidCap.INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS
)
# Any 31-bit value is a valid revision identifier (A.1, bit 31 is always 0); this one reads "vt".
VTEMU_VMCS_REVISION_ID = 0x7674
# CR0: PE, NE and PG must be 1 in VMX operation (A.7); unrestricted guest exempts PE and PG.
# vtemu departs from Intel processors here, on purpose and visibly: it does not require CR0.NE
# or CR4.VMXE in VMX non-root operation (A.7/A.8 let a processor choose its fixed bits). CR0
# keeps only PE and PG fixed, which "unrestricted guest" exempts, so a guest boots from the
# reset vector with exactly the CR0/CR4 it sets, without read-shadow games to hide NE/VMXE.
# CR4 bits that may be 1 are those of the features vtemu's vCPU (QEMU's TCG through Unicorn)
# implements and its CPUID reports: bits 10:0; VMXE stays 0 because nested VMX is not offered.
VTEMU_CR0_FIXED0 = int(Cr0.PE | Cr0.PG)
VTEMU_CR0_FIXED1 = ones(32)
VTEMU_CR4_FIXED0 = 0
VTEMU_CR4_FIXED1 = int(ones(11))
# 40 physical-address bits: QEMU's default phys-bits, and wide enough for vtemu's host-physical
# layout (VMM-private memory sits at 2^39, vtemu.machine.layout).
VTEMU_PHYSICAL_ADDRESS_WIDTH = 40


@dataclass(frozen=True)
class VmxCapabilities:
    """What vtemu's VMX implementation supports, and the IA32_VMX_* MSR values that report it.

    The defaults are vtemu's; tests build variants to exercise rules that depend on support
    (e.g. "other event" injection exists only with the monitor trap flag).
    """

    revision_id: int = VTEMU_VMCS_REVISION_ID
    vmcs_size: int = 4096
    vmcs_memory_type: MemoryType = MemoryType.WB
    physical_address_width: int = VTEMU_PHYSICAL_ADDRESS_WIDTH
    linear_address_width: int = 48
    pin: PinBasedControls = VTEMU_PIN_CONTROLS
    primary: PrimaryProcessorControls = VTEMU_PRIMARY_CONTROLS
    secondary: SecondaryProcessorControls = VTEMU_SECONDARY_CONTROLS
    exit: ExitControls = VTEMU_EXIT_CONTROLS
    entry: EntryControls = VTEMU_ENTRY_CONTROLS
    true_controls: bool = True  # IA32_VMX_BASIC[55]: TRUE_* MSRs report clearable default1 bits
    ins_outs_info: bool = True  # IA32_VMX_BASIC[54]: instruction information for INS/OUTS exits
    any_exception_error_code: bool = False  # IA32_VMX_BASIC[56]: relaxed error-code entry check
    preemption_timer_rate: int = 5  # IA32_VMX_MISC[4:0]: timer ticks when TSC bit 5 changes
    stores_lma: bool = True  # IA32_VMX_MISC[5]: VM exit stores EFER.LMA into "IA-32e mode guest"
    activity_states: frozenset[ActivityState] = field(default_factory=lambda: frozenset({ActivityState.HLT}))
    cr3_target_count: int = 4
    msr_list_factor: int = 0  # IA32_VMX_MISC[27:25]: lists of up to 512 * (N + 1) MSRs
    vmwrite_any_field: bool = False  # IA32_VMX_MISC[29]: VMWRITE may write VM-exit information
    zero_length_injection: bool = False  # IA32_VMX_MISC[30]: software events with length 0
    cr0_fixed0: int = VTEMU_CR0_FIXED0
    cr0_fixed1: int = VTEMU_CR0_FIXED1
    cr4_fixed0: int = VTEMU_CR4_FIXED0
    cr4_fixed1: int = VTEMU_CR4_FIXED1
    ept_vpid: EptVpidCap = VTEMU_EPT_VPID_CAP

    def __post_init__(self) -> None:
        if not 0 <= self.revision_id < 1 << 31:
            raise ValueError("A.1: the VMCS revision identifier has 31 bits")
        if not 0 < self.vmcs_size <= 4096:
            raise ValueError("A.1: the VMCS region is at most 4096 bytes")
        if not 0 <= self.cr3_target_count <= 0x1FF or not 0 <= self.msr_list_factor <= 7:
            raise ValueError("A.6: CR3-target count has 9 bits, the MSR-list factor 3")
        if ActivityState.ACTIVE in self.activity_states:
            raise ValueError("A.6 reports only HLT, shutdown and wait-for-SIPI; active is always supported")

    # --- control settings (A.3-A.5) ---------------------------------------------------------
    def supported_controls(self, kind: ControlKind) -> int:
        """The controls of `kind` vtemu implements."""
        return int({
            ControlKind.PIN: self.pin,
            ControlKind.PRIMARY: self.primary,
            ControlKind.SECONDARY: self.secondary,
            ControlKind.EXIT: self.exit,
            ControlKind.ENTRY: self.entry,
        }[kind])

    def allowed1(self, kind: ControlKind) -> int:
        """Controls of `kind` that may be 1 (default1 bits always may: they were once fixed to 1)."""
        return self.supported_controls(kind) | CONTROL_CLASSES[kind].default1

    def capability(self, kind: ControlKind, *, true: bool | None = None) -> ControlCapability:
        """The allowed settings VM entry enforces (the TRUE MSR when IA32_VMX_BASIC[55] = 1).

        Legacy MSRs report every default1 bit as required (A.3-A.5); TRUE MSRs require only the
        default1 bits that name no control vtemu implements, so e.g. "CR3-load exiting" may be 0.
        """
        control_class = CONTROL_CLASSES[kind]
        use_true = self.true_controls if true is None else true
        required = control_class.default1
        if use_true and control_class.true_msr is not None:
            required &= ~self.supported_controls(kind)
        return ControlCapability(allowed0=required, allowed1=self.allowed1(kind))

    def supports(self, control: Control) -> bool:
        """True if every bit of `control` may be 1 (secondary controls need the primary switch)."""
        kind = _KIND_OF_FLAGS[type(control)]
        if kind is ControlKind.SECONDARY and not self._has_secondary_controls:
            return False
        return int(control) & ~self.allowed1(kind) == 0

    @property
    def _has_secondary_controls(self) -> bool:
        return bool(self.primary & PrimaryProcessorControls.ACTIVATE_SECONDARY_CONTROLS)

    def supports_activity_state(self, state: ActivityState) -> bool:
        return state is ActivityState.ACTIVE or state in self.activity_states

    @property
    def max_msr_list_entries(self) -> int:
        """A.6: the recommended maximum number of MSRs in each MSR list, 512 * (N + 1)."""
        return 512 * (self.msr_list_factor + 1)

    # --- VMCS fields (Appendix B footnotes, A.9) --------------------------------------------
    def supports_field(self, vmcs_field: VmcsField) -> bool:
        requirement = _FIELD_REQUIRES.get(vmcs_field.full)
        if requirement is None:
            return True
        return any(self.supports(control) for control in requirement)

    def supported_fields(self) -> frozenset[VmcsField]:
        """Every encoding (full and high) VMREAD/VMWRITE accept on this processor."""
        return frozenset(f for f in VmcsField if self.supports_field(f))

    # --- the capability MSRs (Appendix A) ---------------------------------------------------
    def msr(self, index: VmxMsr) -> int:
        """The value RDMSR returns; KeyError for an MSR this configuration does not implement (#GP)."""
        return self.msrs()[index]

    def msrs(self) -> dict[VmxMsr, int]:
        values = {
            VmxMsr.BASIC: self._basic(),
            VmxMsr.MISC: self._misc(),
            VmxMsr.CR0_FIXED0: self.cr0_fixed0,
            VmxMsr.CR0_FIXED1: self.cr0_fixed1,
            VmxMsr.CR4_FIXED0: self.cr4_fixed0,
            VmxMsr.CR4_FIXED1: self.cr4_fixed1,
            VmxMsr.VMCS_ENUM: highest_index(self.supported_fields()) << 1,  # A.9: bits 9:1
        }
        for kind, control_class in CONTROL_CLASSES.items():
            if kind is ControlKind.SECONDARY and not self._has_secondary_controls:
                continue
            values[control_class.msr] = self.capability(kind, true=False).msr_value
            if self.true_controls and control_class.true_msr is not None:
                values[control_class.true_msr] = self.capability(kind, true=True).msr_value
        ept_or_vpid = SecondaryProcessorControls.ENABLE_EPT | SecondaryProcessorControls.ENABLE_VPID
        if self._has_secondary_controls and self.secondary & ept_or_vpid:  # A.10: when the MSR exists
            values[VmxMsr.EPT_VPID_CAP] = self._ept_vpid_cap()
        return values

    def _basic(self) -> int:
        """A.1: revision id 30:0, VMCS size 44:32, memory type 53:50, feature bits 54-56."""
        return (
            self.revision_id
            | self.vmcs_size << 32
            | int(self.vmcs_memory_type) << 50
            | int(self.ins_outs_info) << 54
            | int(self.true_controls) << 55
            | int(self.any_exception_error_code) << 56
        )

    def _misc(self) -> int:
        """A.6: timer rate 4:0, LMA store 5, activity states 8:6, CR3 targets 24:16, MSR lists 27:25."""
        activity = sum(1 << (5 + int(state)) for state in self.activity_states)
        return (
            self.preemption_timer_rate
            | int(self.stores_lma) << 5
            | activity
            | self.cr3_target_count << 16
            | self.msr_list_factor << 25
            | int(self.vmwrite_any_field) << 29
            | int(self.zero_length_injection) << 30
        )

    def _ept_vpid_cap(self) -> int:
        """A.10, reporting EPT bits only with "enable EPT" and VPID bits only with "enable VPID"."""
        value = int(self.ept_vpid)
        if not self.supports(SecondaryProcessorControls.ENABLE_EPT):
            value &= ~_EPT_CAP_BITS
        if not self.supports(SecondaryProcessorControls.ENABLE_VPID):
            value &= ~_VPID_CAP_BITS
        return value

    def ept_memory_types(self) -> frozenset[MemoryType]:
        """EPT paging-structure memory types the EPTP may name (A.10 bits 8 and 14)."""
        types = set()
        if self.ept_vpid & EptVpidCap.MEMORY_TYPE_UC:
            types.add(MemoryType.UC)
        if self.ept_vpid & EptVpidCap.MEMORY_TYPE_WB:
            types.add(MemoryType.WB)
        return frozenset(types)

    def ept_walk_lengths(self) -> frozenset[int]:
        lengths = set()
        if self.ept_vpid & EptVpidCap.WALK_LENGTH_4:
            lengths.add(4)
        if self.ept_vpid & EptVpidCap.WALK_LENGTH_5:
            lengths.add(5)
        return frozenset(lengths)
