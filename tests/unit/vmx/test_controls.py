"""Control bit positions (SDM 24.6-24.8) and the capability MSRs vtemu reports (Appendix A)."""

from __future__ import annotations

import pytest

from vtemu.vmx.controls import (
    CONTROL_CLASSES,
    ControlCapability,
    ControlKind,
    EntryControls as En,
    Eptp,
    EptVpidCap,
    ExitControls as Ex,
    MemoryType,
    PinBasedControls as Pin,
    PrimaryProcessorControls as Pri,
    SecondaryProcessorControls as Sec,
    VmxCapabilities,
    VmxMsr,
)
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.state_formats import ActivityState

CAPS = VmxCapabilities()

BIT_POSITIONS = [
    (Pin.EXTERNAL_INTERRUPT_EXITING, 0),
    (Pin.NMI_EXITING, 3),
    (Pin.VIRTUAL_NMIS, 5),
    (Pin.ACTIVATE_PREEMPTION_TIMER, 6),
    (Pin.PROCESS_POSTED_INTERRUPTS, 7),
    (Pri.INTERRUPT_WINDOW_EXITING, 2),
    (Pri.USE_TSC_OFFSETTING, 3),
    (Pri.HLT_EXITING, 7),
    (Pri.INVLPG_EXITING, 9),
    (Pri.MWAIT_EXITING, 10),
    (Pri.RDPMC_EXITING, 11),
    (Pri.RDTSC_EXITING, 12),
    (Pri.CR3_LOAD_EXITING, 15),
    (Pri.CR3_STORE_EXITING, 16),
    (Pri.ACTIVATE_TERTIARY_CONTROLS, 17),
    (Pri.CR8_LOAD_EXITING, 19),
    (Pri.CR8_STORE_EXITING, 20),
    (Pri.USE_TPR_SHADOW, 21),
    (Pri.NMI_WINDOW_EXITING, 22),
    (Pri.MOV_DR_EXITING, 23),
    (Pri.UNCONDITIONAL_IO_EXITING, 24),
    (Pri.USE_IO_BITMAPS, 25),
    (Pri.MONITOR_TRAP_FLAG, 27),
    (Pri.USE_MSR_BITMAPS, 28),
    (Pri.MONITOR_EXITING, 29),
    (Pri.PAUSE_EXITING, 30),
    (Pri.ACTIVATE_SECONDARY_CONTROLS, 31),
    (Sec.VIRTUALIZE_APIC_ACCESSES, 0),
    (Sec.ENABLE_EPT, 1),
    (Sec.DESCRIPTOR_TABLE_EXITING, 2),
    (Sec.ENABLE_RDTSCP, 3),
    (Sec.VIRTUALIZE_X2APIC_MODE, 4),
    (Sec.ENABLE_VPID, 5),
    (Sec.WBINVD_EXITING, 6),
    (Sec.UNRESTRICTED_GUEST, 7),
    (Sec.APIC_REGISTER_VIRTUALIZATION, 8),
    (Sec.VIRTUAL_INTERRUPT_DELIVERY, 9),
    (Sec.PAUSE_LOOP_EXITING, 10),
    (Sec.RDRAND_EXITING, 11),
    (Sec.ENABLE_INVPCID, 12),
    (Sec.ENABLE_VM_FUNCTIONS, 13),
    (Sec.VMCS_SHADOWING, 14),
    (Sec.RDSEED_EXITING, 16),
    (Sec.ENABLE_PML, 17),
    (Sec.EPT_VIOLATION_VE, 18),
    (Sec.ENABLE_XSAVES_XRSTORS, 20),
    (Sec.USE_TSC_SCALING, 25),
    (Ex.SAVE_DEBUG_CONTROLS, 2),
    (Ex.HOST_ADDRESS_SPACE_SIZE, 9),
    (Ex.LOAD_IA32_PERF_GLOBAL_CTRL, 12),
    (Ex.ACKNOWLEDGE_INTERRUPT_ON_EXIT, 15),
    (Ex.SAVE_IA32_PAT, 18),
    (Ex.LOAD_IA32_PAT, 19),
    (Ex.SAVE_IA32_EFER, 20),
    (Ex.LOAD_IA32_EFER, 21),
    (Ex.SAVE_PREEMPTION_TIMER, 22),
    (Ex.CLEAR_IA32_BNDCFGS, 23),
    (En.LOAD_DEBUG_CONTROLS, 2),
    (En.IA32E_MODE_GUEST, 9),
    (En.ENTRY_TO_SMM, 10),
    (En.DEACTIVATE_DUAL_MONITOR, 11),
    (En.LOAD_IA32_PERF_GLOBAL_CTRL, 13),
    (En.LOAD_IA32_PAT, 14),
    (En.LOAD_IA32_EFER, 15),
    (En.LOAD_IA32_BNDCFGS, 16),
]


@pytest.mark.parametrize(("control", "position"), BIT_POSITIONS, ids=lambda v: getattr(v, "name", str(v)))
def test_bit_positions(control: int, position: int) -> None:
    assert int(control) == 1 << position


def test_default1_classes() -> None:
    """A.3-A.5: the bits the legacy capability MSRs always report as required."""
    assert CONTROL_CLASSES[ControlKind.PIN].default1 == 0b1_0110  # bits 1, 2, 4
    assert CONTROL_CLASSES[ControlKind.PRIMARY].default1 == (1 << 1) | (0b111 << 4) | (1 << 8) | (
        0b1111 << 13
    ) | (1 << 26)
    assert CONTROL_CLASSES[ControlKind.EXIT].default1 == 0x1FF | 3 << 10 | 3 << 13 | 3 << 16
    assert CONTROL_CLASSES[ControlKind.ENTRY].default1 == 0x1FF | 1 << 12
    assert CONTROL_CLASSES[ControlKind.SECONDARY].default1 == 0


def test_basic_msr() -> None:
    basic = CAPS.msr(VmxMsr.BASIC)
    assert basic & 0x7FFF_FFFF == CAPS.revision_id and not basic >> 31 & 1
    assert basic >> 32 & 0x1FFF == 4096  # bits 44:32 VMCS region size
    assert basic >> 48 & 1 == 0  # 64-bit physical addresses
    assert basic >> 50 & 0xF == MemoryType.WB == 6
    assert basic >> 54 & 1 == 1  # INS/OUTS instruction information
    assert basic >> 55 & 1 == 1  # TRUE capability MSRs
    assert basic >> 56 & 1 == 0


def test_legacy_and_true_control_msrs() -> None:
    """Legacy MSRs require every default1 bit; TRUE ones free the default1 bits vtemu implements."""
    msrs = CAPS.msrs()
    assert msrs[VmxMsr.PINBASED_CTLS] & 0xFFFF_FFFF == 0x16
    assert msrs[VmxMsr.TRUE_PINBASED_CTLS] & 0xFFFF_FFFF == 0x16
    assert msrs[VmxMsr.PROCBASED_CTLS] & 0xFFFF_FFFF == 0x0401_E172
    assert msrs[VmxMsr.TRUE_PROCBASED_CTLS] & 0xFFFF_FFFF == 0x0400_6172  # CR3-load/store exiting may be 0
    assert msrs[VmxMsr.EXIT_CTLS] & 0xFFFF_FFFF == 0x0003_6DFF
    assert msrs[VmxMsr.TRUE_EXIT_CTLS] & 0xFFFF_FFFF == 0x0003_6DFB  # save debug controls may be 0
    assert msrs[VmxMsr.ENTRY_CTLS] & 0xFFFF_FFFF == 0x0000_11FF
    assert msrs[VmxMsr.TRUE_ENTRY_CTLS] & 0xFFFF_FFFF == 0x0000_11FB  # load debug controls may be 0
    assert msrs[VmxMsr.PROCBASED_CTLS2] & 0xFFFF_FFFF == 0


@pytest.mark.parametrize(
    ("msr", "supported", "unsupported"),
    [
        (
            VmxMsr.PINBASED_CTLS,
            Pin.ACTIVATE_PREEMPTION_TIMER | Pin.VIRTUAL_NMIS,
            Pin.PROCESS_POSTED_INTERRUPTS,
        ),
        (
            VmxMsr.PROCBASED_CTLS,
            Pri.HLT_EXITING | Pri.USE_IO_BITMAPS | Pri.ACTIVATE_SECONDARY_CONTROLS | Pri.MONITOR_TRAP_FLAG,
            Pri.USE_TPR_SHADOW,
        ),
        (
            VmxMsr.PROCBASED_CTLS2,
            Sec.ENABLE_EPT | Sec.UNRESTRICTED_GUEST | Sec.ENABLE_VPID | Sec.PAUSE_LOOP_EXITING,
            Sec.VMCS_SHADOWING | Sec.ENABLE_PML,
        ),
        (
            VmxMsr.EXIT_CTLS,
            Ex.ACKNOWLEDGE_INTERRUPT_ON_EXIT | Ex.SAVE_PREEMPTION_TIMER,
            Ex.LOAD_IA32_PERF_GLOBAL_CTRL,
        ),
        (VmxMsr.ENTRY_CTLS, En.IA32E_MODE_GUEST | En.LOAD_IA32_PAT, En.ENTRY_TO_SMM | En.LOAD_IA32_BNDCFGS),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_allowed1_settings(msr: VmxMsr, supported: int, unsupported: int) -> None:
    allowed1 = CAPS.msr(msr) >> 32
    assert allowed1 & supported == supported
    assert allowed1 & unsupported == 0


def test_control_capability_violations() -> None:
    capability = CAPS.capability(ControlKind.PIN)
    assert capability.allows(0x16 | Pin.NMI_EXITING)
    assert capability.violations(0) == 0x16
    assert capability.violations(0x16 | Pin.PROCESS_POSTED_INTERRUPTS) == Pin.PROCESS_POSTED_INTERRUPTS
    assert ControlCapability.from_msr(capability.msr_value) == capability


def test_legacy_checks_when_true_msrs_absent() -> None:
    legacy = VmxCapabilities(true_controls=False)
    assert VmxMsr.TRUE_PROCBASED_CTLS not in legacy.msrs()
    assert legacy.msr(VmxMsr.BASIC) >> 55 & 1 == 0
    assert not legacy.capability(ControlKind.PRIMARY).allows(0x0400_6172)  # CR3 exiting now required


def test_misc_msr() -> None:
    misc = CAPS.msr(VmxMsr.MISC)
    assert misc & 0x1F == 5  # preemption timer rate
    assert misc >> 5 & 1 == 1  # EFER.LMA stored into "IA-32e mode guest"
    assert misc >> 6 & 0b111 == 0b001  # HLT only
    assert misc >> 16 & 0x1FF == 4  # CR3-target values
    assert misc >> 25 & 0b111 == 0  # 512 MSRs per list
    assert misc >> 29 & 1 == 0  # VMWRITE refuses VM-exit information fields
    assert misc >> 30 & 1 == 0
    every_state = VmxCapabilities(
        activity_states=frozenset({ActivityState.HLT, ActivityState.SHUTDOWN, ActivityState.WAIT_FOR_SIPI})
    )
    assert every_state.msr(VmxMsr.MISC) >> 6 & 0b111 == 0b111


def test_fixed_cr_msrs() -> None:
    assert CAPS.msr(VmxMsr.CR0_FIXED0) == 0x8000_0001  # PE, PG (vtemu does not fix NE)
    assert CAPS.msr(VmxMsr.CR0_FIXED1) == 0xFFFF_FFFF
    assert CAPS.msr(VmxMsr.CR4_FIXED0) == 0  # VMXE not required
    assert not CAPS.msr(VmxMsr.CR4_FIXED1) & 0x2000  # and not allowed: no nested VMX


def test_vmcs_enum_reports_the_highest_supported_index() -> None:
    """A.9: the VMX-preemption timer value (482Eh, index 17h) is vtemu's highest-index field."""
    assert CAPS.msr(VmxMsr.VMCS_ENUM) == 0x17 << 1 == 0x2E


def test_ept_vpid_cap() -> None:
    cap = CAPS.msr(VmxMsr.EPT_VPID_CAP)
    for position in (6, 8, 14, 16, 17, 20, 21, 25, 26, 32, 40, 41, 42, 43):
        assert cap >> position & 1, position
    assert not cap & EptVpidCap.EXECUTE_ONLY
    assert not cap & EptVpidCap.WALK_LENGTH_5
    no_vpid = VmxCapabilities(secondary=CAPS.secondary & ~Sec.ENABLE_VPID)
    assert no_vpid.msr(VmxMsr.EPT_VPID_CAP) >> 32 == 0
    assert no_vpid.msr(VmxMsr.EPT_VPID_CAP) & 0xFFFF_FFFF == cap & 0xFFFF_FFFF


def test_msrs_of_absent_features_are_not_implemented() -> None:
    assert VmxMsr.VMFUNC not in CAPS.msrs()
    no_secondary = VmxCapabilities(primary=CAPS.primary & ~Pri.ACTIVATE_SECONDARY_CONTROLS)
    assert VmxMsr.PROCBASED_CTLS2 not in no_secondary.msrs()
    assert VmxMsr.EPT_VPID_CAP not in no_secondary.msrs()
    with pytest.raises(KeyError):
        no_secondary.msr(VmxMsr.PROCBASED_CTLS2)


def test_supports() -> None:
    assert CAPS.supports(Sec.ENABLE_EPT | Sec.UNRESTRICTED_GUEST)
    assert CAPS.supports(Pri.MONITOR_TRAP_FLAG)
    assert not CAPS.supports(Pri.USE_TPR_SHADOW)
    assert CAPS.supports(Pri.HLT_EXITING | Pri.RDTSC_EXITING)
    assert not CAPS.supports(Pri.HLT_EXITING | Pri.USE_TPR_SHADOW)
    assert not VmxCapabilities(primary=CAPS.primary & ~Pri.ACTIVATE_SECONDARY_CONTROLS).supports(
        Sec.ENABLE_EPT
    )


@pytest.mark.parametrize(
    ("field", "exists"),
    [
        (F.EPT_POINTER, True),
        (F.GUEST_PDPTE0_HIGH, True),
        (F.VIRTUAL_PROCESSOR_ID, True),
        (F.PLE_GAP, True),
        (F.VMX_PREEMPTION_TIMER_VALUE, True),
        (F.GUEST_IA32_PAT, True),
        (F.HOST_IA32_EFER, True),
        (F.GUEST_RIP, True),
        (F.VIRTUAL_APIC_PAGE_ADDR, False),
        (F.TPR_THRESHOLD, False),
        (F.POSTED_INTR_NV, False),
        (F.GUEST_PML_INDEX, False),
        (F.VMREAD_BITMAP, False),
        (F.GUEST_IA32_PERF_GLOBAL_CTRL, False),
        (F.HOST_S_CET, False),
        (F.SHARED_EPT_POINTER, False),
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_supported_fields(field: F, exists: bool) -> None:
    assert CAPS.supports_field(field) is exists


def test_fields_follow_their_controls() -> None:
    no_ept = VmxCapabilities(secondary=Sec.ENABLE_VPID)
    assert not no_ept.supports_field(F.EPT_POINTER)
    assert not no_ept.supports_field(F.GUEST_PHYSICAL_ADDRESS)


def test_eptp_layout() -> None:
    """Table 24-8: memory type 2:0, walk length - 1 in 5:3, A/D enable bit 6, PML4 address 12+."""
    eptp = Eptp(
        memory_type=MemoryType.WB,
        walk_length=4,
        accessed_dirty=True,
        supervisor_shadow_stack=False,
        pml4_frame=0x12345,
    )
    assert eptp.encode() == 0x1234_5000 | 6 | 3 << 3 | 1 << 6 == 0x1234_505E
    assert Eptp.decode(0x1234_505E) == eptp
    assert eptp.pml4_address == 0x1234_5000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"revision_id": 1 << 31},
        {"vmcs_size": 8192},
        {"cr3_target_count": 512},
        {"activity_states": frozenset({ActivityState.ACTIVE})},
    ],
)
def test_invalid_capabilities_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        VmxCapabilities(**kwargs)
