"""Event exits: exceptions (0), external interrupts (1), triple fault (2), interrupt window (7),
and failed VM entries (33, 34).

External interrupts follow the classic KVM flow: the exit acknowledges the PIC (acknowledge
interrupt on exit), the vector waits in the hypervisor until the guest can take it, and is
injected through the VM-entry interruption-information field; while the guest has
interrupts blocked, interrupt-window exiting brings control back the moment it can.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import unicorn.x86_const as U

from vtemu.hv.outcome import RESUME, Outcome, RunEnd, Shutdown
from vtemu.vmx.controls import PrimaryProcessorControls as P
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.interruption import InterruptionInfo
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit

PAGE_FAULT = 14


def handle_exception(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    """An exception the exception bitmap intercepted: reflect it into the guest unchanged."""
    info = exit.interruption
    assert info is not None
    if info.vector == PAGE_FAULT:
        cpu.vcpu.write(U.UC_X86_REG_CR2, exit.qualification)
    cpu.inject(info, exit.interruption_error, exit.instruction_length)
    return RESUME


def handle_external_interrupt(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    if exit.interruption is not None:
        partition.pending_vectors(cpu).append(exit.interruption.vector)
    else:
        assert cpu.interrupts is not None
        partition.pending_vectors(cpu).append(cpu.interrupts.acknowledge())
    return inject_pending_interrupt(cpu, partition)


def handle_interrupt_window(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    return inject_pending_interrupt(cpu, partition)


def inject_pending_interrupt(cpu: "VmxCpu", partition: "Partition") -> Outcome:
    """Inject the oldest pending vector if the guest can take it now, else wait for the window."""
    pending = partition.pending_vectors(cpu)
    controls = cpu.vmcs.read(F.CPU_BASED_VM_EXEC_CONTROL)
    injecting = cpu.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) >> 31
    if pending and not injecting and cpu.interruptible():
        cpu.inject(InterruptionInfo.external_interrupt(pending.pop(0)))
    wants_window = bool(pending)
    if wants_window != bool(controls & P.INTERRUPT_WINDOW_EXITING):
        cpu.vmcs.write(F.CPU_BASED_VM_EXEC_CONTROL, controls ^ P.INTERRUPT_WINDOW_EXITING)
    return RESUME


def handle_triple_fault(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    return Shutdown(RunEnd.TRIPLE_FAULT, f"triple fault ({exit.detail or 'shutdown'})", dump=True)


def handle_entry_failure(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    return Shutdown(RunEnd.UNHANDLED_EXIT, f"VM entry failed: {exit.detail}", dump=True)


HANDLERS = {
    ExitReason.EXCEPTION_OR_NMI: handle_exception,
    ExitReason.EXTERNAL_INTERRUPT: handle_external_interrupt,
    ExitReason.INTERRUPT_WINDOW: handle_interrupt_window,
    ExitReason.TRIPLE_FAULT: handle_triple_fault,
    ExitReason.ENTRY_FAILURE_GUEST_STATE: handle_entry_failure,
    ExitReason.ENTRY_FAILURE_MSR_LOADING: handle_entry_failure,
}
