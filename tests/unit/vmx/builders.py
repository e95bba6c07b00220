"""Valid VMCS configurations for the entry-check tests: each passes every check, so a test can
change one field and see exactly one rule fail."""

from __future__ import annotations

from vtemu.vmx.controls import (
    ControlKind,
    EntryControls,
    ExitControls,
    PinBasedControls,
    PrimaryProcessorControls,
    SecondaryProcessorControls,
    VmxCapabilities,
)
from vtemu.vmx.fields import GuestSegment, VmcsField as F, guest_segment_fields
from vtemu.vmx.vmcs import Vmcs

CAPS = VmxCapabilities()


def required(kind: ControlKind) -> int:
    """The default1 bits vtemu's TRUE capability MSRs still require."""
    return CAPS.capability(kind).allowed0


PIN = (
    required(ControlKind.PIN)
    | PinBasedControls.EXTERNAL_INTERRUPT_EXITING
    | PinBasedControls.NMI_EXITING
    | PinBasedControls.VIRTUAL_NMIS
)
PRIMARY = (
    required(ControlKind.PRIMARY)
    | PrimaryProcessorControls.HLT_EXITING
    | PrimaryProcessorControls.USE_IO_BITMAPS
    | PrimaryProcessorControls.USE_MSR_BITMAPS
    | PrimaryProcessorControls.ACTIVATE_SECONDARY_CONTROLS
)
SECONDARY = SecondaryProcessorControls.ENABLE_EPT | SecondaryProcessorControls.ENABLE_VPID
EXIT = (
    required(ControlKind.EXIT)
    | ExitControls.HOST_ADDRESS_SPACE_SIZE
    | ExitControls.ACKNOWLEDGE_INTERRUPT_ON_EXIT
    | ExitControls.SAVE_IA32_EFER
    | ExitControls.LOAD_IA32_EFER
)
ENTRY = required(ControlKind.ENTRY) | EntryControls.LOAD_DEBUG_CONTROLS | EntryControls.LOAD_IA32_EFER
EPTP_WB_4LEVEL = 0x20000 | 6 | (4 - 1) << 3

# Access-rights bytes (Table 24-2): type | S << 4 | DPL << 5 | P << 7 | L << 13 | D/B << 14 | G << 15.
AR_CODE64 = 0xA09B  # execute/read accessed code, L = 1, G = 1
AR_CODE32 = 0xC09B  # execute/read accessed code, D = 1, G = 1
AR_DATA32 = 0xC093  # read/write accessed data, B = 1, G = 1
AR_REAL_CODE = 0x9B
AR_REAL_DATA = 0x93
AR_V8086 = 0xF3
AR_BUSY_TSS32 = 0x8B
AR_LDT = 0x82
AR_UNUSABLE = 1 << 16


def set_segment(
    vmcs: Vmcs, segment: GuestSegment, selector: int, base: int, limit: int, access_rights: int
) -> None:
    fields = guest_segment_fields(segment)
    vmcs.write(fields.selector, selector)
    vmcs.write(fields.base, base)
    vmcs.write(fields.limit, limit)
    vmcs.write(fields.access_rights, access_rights)


def _controls(vmcs: Vmcs) -> None:
    vmcs.write(F.PIN_BASED_VM_EXEC_CONTROL, PIN)
    vmcs.write(F.CPU_BASED_VM_EXEC_CONTROL, PRIMARY)
    vmcs.write(F.SECONDARY_VM_EXEC_CONTROL, SECONDARY)
    vmcs.write(F.VM_EXIT_CONTROLS, EXIT)
    vmcs.write(F.VM_ENTRY_CONTROLS, ENTRY)
    vmcs.write(F.IO_BITMAP_A, 0x10000)
    vmcs.write(F.IO_BITMAP_B, 0x11000)
    vmcs.write(F.MSR_BITMAP, 0x12000)
    vmcs.write(F.VIRTUAL_PROCESSOR_ID, 1)
    vmcs.write(F.EPT_POINTER, EPTP_WB_4LEVEL)


def _common_guest(vmcs: Vmcs) -> None:
    vmcs.write(F.GUEST_RFLAGS, 0x2)
    vmcs.write(F.GUEST_DR7, 0x400)
    vmcs.write(F.VMCS_LINK_POINTER, (1 << 64) - 1)
    vmcs.write(F.GUEST_IA32_PAT, 0x0007_0406_0007_0406)  # the power-up PAT (Vol. 3A 11.12.4)


def long_mode_vmcs() -> Vmcs:
    """A 64-bit guest (IA-32e mode, CS.L = 1) with EPT and VPID."""
    vmcs = Vmcs()
    _controls(vmcs)
    vmcs.write(F.VM_ENTRY_CONTROLS, ENTRY | EntryControls.IA32E_MODE_GUEST)
    _common_guest(vmcs)
    vmcs.write(F.GUEST_CR0, 0x8000_0031)  # PG | NE | ET | PE
    vmcs.write(F.GUEST_CR4, 0x20)  # PAE (vtemu does not require VMXE)
    vmcs.write(F.GUEST_CR3, 0x1000)
    vmcs.write(F.GUEST_IA32_EFER, 0x500)  # LMA | LME
    vmcs.write(F.GUEST_RIP, 0x10_0000)
    set_segment(vmcs, GuestSegment.CS, 0x08, 0, 0xFFFF_FFFF, AR_CODE64)
    for segment in (GuestSegment.SS, GuestSegment.DS, GuestSegment.ES):
        set_segment(vmcs, segment, 0x10, 0, 0xFFFF_FFFF, AR_DATA32)
    for segment in (GuestSegment.FS, GuestSegment.GS, GuestSegment.LDTR):
        set_segment(vmcs, segment, 0, 0, 0, AR_UNUSABLE)
    set_segment(vmcs, GuestSegment.TR, 0x18, 0x5000, 0x67, AR_BUSY_TSS32)
    vmcs.write(F.GUEST_GDTR_BASE, 0x4000)
    vmcs.write(F.GUEST_GDTR_LIMIT, 0x27)
    vmcs.write(F.GUEST_IDTR_BASE, 0x6000)
    vmcs.write(F.GUEST_IDTR_LIMIT, 0xFFF)
    return vmcs


def real_mode_vmcs() -> Vmcs:
    """An unrestricted guest at the reset vector (SDM Vol. 3A 9.1.1 state: real mode, CR0.PE = 0)."""
    vmcs = Vmcs()
    _controls(vmcs)
    vmcs.write(
        F.SECONDARY_VM_EXEC_CONTROL,
        SecondaryProcessorControls.ENABLE_EPT | SecondaryProcessorControls.UNRESTRICTED_GUEST,
    )
    vmcs.write(F.VM_ENTRY_CONTROLS, ENTRY & ~EntryControls.LOAD_IA32_EFER)
    _common_guest(vmcs)
    vmcs.write(F.GUEST_CR0, 0x30)  # NE | ET; PE and PG are exempt under unrestricted guest
    vmcs.write(F.GUEST_CR4, 0)
    vmcs.write(F.GUEST_RIP, 0xFFF0)
    set_segment(vmcs, GuestSegment.CS, 0xF000, 0xFFFF_0000, 0xFFFF, AR_REAL_CODE)
    for segment in (GuestSegment.SS, GuestSegment.DS, GuestSegment.ES, GuestSegment.FS, GuestSegment.GS):
        set_segment(vmcs, segment, 0, 0, 0xFFFF, AR_REAL_DATA)
    set_segment(vmcs, GuestSegment.TR, 0, 0, 0xFFFF, AR_BUSY_TSS32)
    set_segment(vmcs, GuestSegment.LDTR, 0, 0, 0xFFFF, AR_LDT)
    vmcs.write(F.GUEST_GDTR_LIMIT, 0xFFFF)
    vmcs.write(F.GUEST_IDTR_LIMIT, 0xFFFF)
    return vmcs


def v8086_vmcs() -> Vmcs:
    """A virtual-8086 task under 32-bit paging (RFLAGS.VM = 1, CR0.PE = PG = 1)."""
    vmcs = long_mode_vmcs()
    vmcs.write(F.VM_ENTRY_CONTROLS, ENTRY)
    vmcs.write(F.GUEST_IA32_EFER, 0)
    vmcs.write(F.GUEST_CR4, 0)
    vmcs.write(F.GUEST_RFLAGS, 0x2_0002)
    vmcs.write(F.GUEST_RIP, 0x100)
    for index, segment in enumerate(
        (GuestSegment.CS, GuestSegment.SS, GuestSegment.DS, GuestSegment.ES, GuestSegment.FS, GuestSegment.GS)
    ):
        selector = 0x1000 + index * 0x100
        set_segment(vmcs, segment, selector, selector << 4, 0xFFFF, AR_V8086)
    return vmcs


def pae_vmcs() -> Vmcs:
    """A 32-bit protected-mode guest with PAE paging under EPT (PDPTEs come from the VMCS)."""
    vmcs = long_mode_vmcs()
    vmcs.write(F.VM_ENTRY_CONTROLS, ENTRY)
    vmcs.write(F.GUEST_IA32_EFER, 0)
    vmcs.write(F.GUEST_CS_AR_BYTES, AR_CODE32)
    vmcs.write(F.GUEST_PDPTE0, 0x3001)
    return vmcs


BASELINES = {"long": long_mode_vmcs, "real": real_mode_vmcs, "v8086": v8086_vmcs, "pae": pae_vmcs}
