"""Several vCPUs per partition: local APICs, INIT/SIPI start-up and the processor set-up.

Every vCPU gets a local APIC (devices/lapic.py) whose ID is the vCPU index; vCPU 0 is the
bootstrap processor, the others are application processors that the hypervisor starts in the
wait-for-SIPI activity state (SDM 24.4.2), as hardware leaves APs after reset (SDM 8.4.1).

The xAPIC page at FEE00000h is not mapped by EPT: an access is an EPT violation (exit 48)
whose instruction the hypervisor emulates on the MMIO bus (hv/mmio.py), and the APIC page is
banked per processor, so the bus device forwards to the APIC of the vCPU whose exit is being
handled. (vtemu does not use the "virtualize APIC accesses" control and exit 44: an EPT
violation already gives the guest-physical address and the instruction.) The x2APIC MSRs
800h-8FFh exit through the MSR bitmap and reach the same APIC through the vCPU's MSR model.
Relocating the APIC base (IA32_APIC_BASE[35:12]) is not modelled.

INIT and SIPI reach the processor as VM exits 3 and 4 (SDM 25.2). The hypervisor answers
INIT by putting the vCPU in its INIT state (SDM 9.1.1 Table 9-1: real mode, CS.base
FFFF0000h) waiting for SIPI, and a SIPI with vector V by starting it in real mode at
CS.selector = V << 8, CS.base = V << 12, IP = 0 (SDM 8.4.4.1, 10.6.1), as KVM does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtemu.devices.lapic import (X2APIC_MSR_BASE, X2APIC_MSR_LAST, ApicBus, ApicRegisterError,
                                 LocalApic, PAGE_SIZE)
from vtemu.machine import layout
from vtemu.machine.msrs import GP
from vtemu.machine.vcpu import GuestException
from vtemu.vmx.controls import SecondaryProcessorControls as S
from vtemu.vmx.controls import VmxCapabilities
from vtemu.vmx.exit import Activity
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.state_formats import ActivityState

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu

X2APIC_ENABLE = 1 << 10       # IA32_APIC_BASE.EXTD (SDM 10.12.1)
# The processor vtemu offers an SMP partition reports wait-for-SIPI among its activity
# states (IA32_VMX_MISC bit 8, SDM A.6), so the hypervisor can park APs there.
SMP_CAPABILITIES = VmxCapabilities(
    activity_states=frozenset({ActivityState.HLT, ActivityState.WAIT_FOR_SIPI}))
# PAUSE-loop exiting with --ple (SDM 25.1.3; fields 4020h/4022h, in TSC ticks = guest ns):
# KVM's defaults. A PAUSE within PLE_GAP of the previous one continues a loop; a loop longer
# than PLE_WINDOW exits.
PLE_GAP = 128
PLE_WINDOW = 4096


class ApicPage:
    """The xAPIC MMIO page: each processor sees its own APIC there (SDM 10.4.1)."""

    def __init__(self, partition: "Partition") -> None:
        self.partition = partition

    def _apic(self) -> LocalApic:
        return self.partition.local_apics[self.partition.current_cpu.index]

    def mmio_read(self, offset: int, size: int) -> int:
        return self._apic().mmio_read(offset, size)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        self._apic().mmio_write(offset, size, value)


def attach_local_apics(partition: "Partition") -> list[LocalApic]:
    """One APIC per vCPU on one APIC bus; the PIC on the BSP's LINT0."""
    bus = ApicBus()
    apics = []
    for cpu in partition.vcpus:
        msrs = cpu.msrs
        apic = LocalApic(cpu.index, partition.clock, bus,
                         extint=partition.pic if cpu.index == 0 else None,
                         x2apic_enabled=lambda msrs=msrs: bool(msrs.apic_base & X2APIC_ENABLE))
        cpu.interrupts = apic
        cpu.signals = apic
        msrs.add_range(X2APIC_MSR_BASE, X2APIC_MSR_LAST, _msr_reader(apic), _msr_writer(apic))
        apics.append(apic)
    partition.apic_bus = bus
    partition.mmio.attach("local-apic", layout.LAPIC_GPA, PAGE_SIZE, ApicPage(partition))
    return apics


def _msr_reader(apic: LocalApic):
    def read(msr: int) -> int:
        try:
            return apic.msr_read(msr)
        except ApicRegisterError:
            raise GuestException(GP, 0) from None
    return read


def _msr_writer(apic: LocalApic):
    def write(msr: int, value: int) -> None:
        try:
            apic.msr_write(msr, value)
        except ApicRegisterError:
            raise GuestException(GP, 0) from None
    return write


def configure_processor(cpu: "VmxCpu", partition: "Partition") -> None:
    """After the mode wrote its VMCS: park APs in wait-for-SIPI, add PAUSE-loop exiting."""
    if cpu.index != 0:
        cpu.vmcs.write(F.GUEST_ACTIVITY_STATE, ActivityState.WAIT_FOR_SIPI)
    else:
        _listen_for_long_spin_waits(partition)
    if partition.spec.ple:
        secondary = cpu.vmcs.read(F.SECONDARY_VM_EXEC_CONTROL)
        cpu.vmcs.write(F.SECONDARY_VM_EXEC_CONTROL, secondary | S.PAUSE_LOOP_EXITING)
        cpu.vmcs.write(F.PLE_GAP, PLE_GAP)
        cpu.vmcs.write(F.PLE_WINDOW, PLE_WINDOW)


def _listen_for_long_spin_waits(partition: "Partition") -> None:
    """--mode pv: HvCallNotifyLongSpinWait (TLFS 0008h) makes the caller yield its turn."""
    service = getattr(partition, "hypercalls", None)
    listeners = getattr(service, "spin_wait_listeners", None)
    if listeners is not None:
        listeners.append(lambda cpu, spins: partition.scheduler.yield_cpu(cpu, "long-spin"))


def init_processor(cpu: "VmxCpu", partition: "Partition") -> None:
    """INIT: the processor's INIT state (Table 9-1); APs then wait for SIPI (SDM 8.4.1)."""
    cpu.vcpu.reset()
    cpu.vcpu.write_msr(0xC0000080, 0)        # IA32_EFER is cleared by INIT
    cpu.vcpu.flush_translations()
    partition.local_apics[cpu.index].reset()
    partition.pending_vectors(cpu).clear()
    state = ActivityState.ACTIVE if cpu.index == 0 else ActivityState.WAIT_FOR_SIPI
    cpu.vmcs.write(F.GUEST_ACTIVITY_STATE, state)


def start_processor(cpu: "VmxCpu", vector: int) -> None:
    """SIPI: real mode at vector << 12 (SDM 8.4.4.1), written into the guest-state area."""
    vmcs = cpu.vmcs
    vmcs.write(F.GUEST_CS_SELECTOR, vector << 8)
    vmcs.write(F.GUEST_CS_BASE, vector << 12)
    vmcs.write(F.GUEST_RIP, 0)
    vmcs.write(F.GUEST_ACTIVITY_STATE, Activity.ACTIVE)
    cpu.vcpu.flush_translations()


def report_lines(partition: "Partition") -> list[str]:
    """What --stats adds about scheduling and DMA remapping (nothing for a plain 1-vCPU run)."""
    lines = []
    if partition.scheduler.time_sliced:
        lines.append(f"{partition.name}: {partition.scheduler.report()}")
    faults = partition.iommu.faults
    if faults:
        lines.append(f"{partition.name}: {len(faults)} DMA remapping faults")
        lines.extend(f"  {fault.describe()}" for fault in faults)
    return lines
