"""Trap-and-emulate with VT-x: the hypervisor's VMCS for an unmodified guest, in KVM's shape.

EPT virtualizes memory (the guest owns its page tables and CR3); unrestricted guest lets it
start in real mode at the reset vector. The hypervisor takes: external interrupts
(acknowledged on exit, then injected), HLT, all port I/O and all MSRs (bitmaps with every
bit set), CR8 (no TPR shadow), CR4.VMXE, MOV DR, MONITOR/MWAIT, RDPMC and WBINVD. CPUID,
INVD, XSETBV, VMCALL and the VMX instructions exit unconditionally. The guest keeps its
exceptions (empty exception bitmap) and its TSC (offset 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtemu.vmx.controls import ControlKind, EntryControls, ExitControls, PinBasedControls
from vtemu.vmx.controls import PrimaryProcessorControls as P
from vtemu.vmx.controls import SecondaryProcessorControls as S
from vtemu.vmx.fields import VmcsField as F

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu

PIN = PinBasedControls.EXTERNAL_INTERRUPT_EXITING | PinBasedControls.NMI_EXITING
PRIMARY = (P.HLT_EXITING | P.USE_TSC_OFFSETTING | P.CR8_LOAD_EXITING | P.CR8_STORE_EXITING
           | P.MOV_DR_EXITING | P.USE_IO_BITMAPS | P.USE_MSR_BITMAPS | P.MWAIT_EXITING
           | P.MONITOR_EXITING | P.RDPMC_EXITING | P.ACTIVATE_SECONDARY_CONTROLS)
SECONDARY = S.ENABLE_EPT | S.UNRESTRICTED_GUEST | S.ENABLE_RDTSCP | S.WBINVD_EXITING
EXIT = (ExitControls.HOST_ADDRESS_SPACE_SIZE | ExitControls.ACKNOWLEDGE_INTERRUPT_ON_EXIT
        | ExitControls.SAVE_IA32_EFER | ExitControls.LOAD_IA32_EFER)
ENTRY = EntryControls.LOAD_IA32_EFER
CR4_VMXE = 1 << 13


def configure(cpu: "VmxCpu", partition: "Partition") -> None:
    """Write the VMCS a VMLAUNCH would start the guest with (guest state is the reset state)."""
    vmcs = cpu.vmcs
    caps = cpu.caps
    for field, kind, value in (
            (F.PIN_BASED_VM_EXEC_CONTROL, ControlKind.PIN, PIN),
            (F.CPU_BASED_VM_EXEC_CONTROL, ControlKind.PRIMARY, PRIMARY),
            (F.SECONDARY_VM_EXEC_CONTROL, ControlKind.SECONDARY, SECONDARY),
            (F.VM_EXIT_CONTROLS, ControlKind.EXIT, EXIT),
            (F.VM_ENTRY_CONTROLS, ControlKind.ENTRY, ENTRY)):
        vmcs.write(field, int(value) | caps.capability(kind).allowed0)  # default-1 bits (A.2)
    vmcs.write(F.EXCEPTION_BITMAP, 0)
    vmcs.write(F.CR0_GUEST_HOST_MASK, 0)
    vmcs.write(F.CR4_GUEST_HOST_MASK, CR4_VMXE)
    vmcs.write(F.CR4_READ_SHADOW, 0)
    vmcs.write(F.TSC_OFFSET, 0)
    vmcs.write(F.EPT_POINTER, partition.memory.ept.eptp)
    vmcs.write(F.IO_BITMAP_A, _all_ones_page(partition))
    vmcs.write(F.IO_BITMAP_B, _all_ones_page(partition))
    vmcs.write(F.MSR_BITMAP, _all_ones_page(partition))
    vmcs.write(F.VMCS_LINK_POINTER, 0xFFFFFFFFFFFFFFFF)


def _all_ones_page(partition: "Partition") -> int:
    """A bitmap page in VMM-private memory with every bit set: every port or MSR exits."""
    hpa = partition.memory.allocator.alloc_table_page()
    partition.host.write(hpa, b"\xff" * 4096)
    return hpa
