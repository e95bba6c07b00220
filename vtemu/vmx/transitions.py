"""VM exit and VM entry, written as the SDM's steps (Vol. 3C chapters 26 and 27).

These are the only two places where control passes between the guest and the hypervisor.
Both work on the live vCPU: the VMCS guest-state area is a view of its registers
(guest_state.py), so "saving" and "loading" guest state are no-ops that the steps name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtemu.machine.delivery import Event, EventType, InterceptedFault, TripleFault, deliver
from vtemu.machine.translation import TranslationFault
from vtemu.machine.cpustate import HF_LMA
from vtemu.vmx.controls import EntryControls, ExitControls
from vtemu.vmx.entry_checks import check_controls, check_guest_state
from vtemu.vmx.exit import ExitDecision, VmExit
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.interruption import InterruptionInfo, InterruptionType
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.vmx.cpu import VmxCpu


_IA32E_MODE_GUEST = int(EntryControls.IA32E_MODE_GUEST)
_SAVE_PREEMPTION_TIMER = ExitControls.SAVE_PREEMPTION_TIMER


class VmEntryFailed(Exception):
    """VMRESUME failed with VMfailValid (SDM 26.2): the hypervisor built an invalid VMCS."""


def vm_exit(cpu: "VmxCpu", exit: VmExit) -> ExitDecision:
    """SDM 27: leave VMX non-root operation and hand the exit to the hypervisor."""
    vmcs = cpu.vmcs
    # 27.1 Architectural state before a VM exit: a fault-like exit leaves the instruction
    #      unexecuted (guest RIP points at it); nothing of the guest has changed yet.
    # 27.2 Recording VM-exit information and updating VM-entry control fields.
    vmcs.record_exit(_ExitInformation(exit))
    # "VM exits clear the valid bit of the VM-entry interruption-information field" (27.2.5).
    if vmcs.stored(F.VM_ENTRY_INTR_INFO_FIELD):
        vmcs.cpu_write(F.VM_ENTRY_INTR_INFO_FIELD, 0)
    # 27.3 Saving guest state: the guest-state area is the live vCPU; nothing to copy. With
    #      IA32_VMX_MISC[5], the exit stores IA32_EFER.LMA into the "IA-32e mode guest"
    #      entry control, so a guest that switched to long mode re-enters in long mode.
    if cpu.caps.stores_lma:
        store_lma(cpu)
    # 27.3.4 Saving non-register state: with "save VMX-preemption timer value" the timer's
    #      current value goes back to its field (0 when its expiry caused the exit).
    if cpu.intercepts.exit_controls & _SAVE_PREEMPTION_TIMER:
        vmcs.cpu_write(F.VMX_PREEMPTION_TIMER_VALUE, cpu.preemption_timer_left())
    # 27.4 Saving MSRs: vtemu offers no MSR-store area (entry checks keep the count at 0).
    # 27.5 Loading host state, 27.6 loading host MSRs: the hypervisor is Python code, so
    #      there is no host CPU state to load; control simply passes to it.
    cpu.exits_taken += 1
    return cpu.exit_handler(exit)


class _ExitInformation:
    """The VM-exit information fields of one exit (SDM 24.9, 27.2), computed when read."""

    _FIELDS = {
        F.EXIT_REASON: lambda e: int(e.reason) | (1 << 31 if e.entry_failure else 0),
        F.EXIT_QUALIFICATION: lambda e: e.qualification,
        F.VM_EXIT_INSTRUCTION_LEN: lambda e: e.instruction_length,
        F.VMX_INSTRUCTION_INFO: lambda e: e.instruction_info,
        F.GUEST_LINEAR_ADDRESS: lambda e: e.guest_linear or 0,
        F.GUEST_PHYSICAL_ADDRESS: lambda e: e.guest_physical or 0,
        F.VM_EXIT_INTR_INFO: lambda e: e.interruption.encode() if e.interruption else 0,
        F.VM_EXIT_INTR_ERROR_CODE: lambda e: e.interruption_error or 0,
        F.IDT_VECTORING_INFO_FIELD: lambda e: e.idt_vectoring.encode() if e.idt_vectoring else 0,
        F.IDT_VECTORING_ERROR_CODE: lambda e: e.idt_vectoring_error or 0,
    }

    def __init__(self, exit: VmExit) -> None:
        self.exit = exit

    def value(self, field: F) -> int | None:
        compute = self._FIELDS.get(field)
        return None if compute is None else compute(self.exit)


def store_lma(cpu: "VmxCpu") -> None:
    """Copy IA32_EFER.LMA into the "IA-32e mode guest" entry control (SDM 27.3, IA32_VMX_MISC[5])."""
    lma = bool(cpu.vcpu.state().hflags & HF_LMA)  # QEMU mirrors EFER.LMA in hflags
    entry = cpu.vmcs.stored(F.VM_ENTRY_CONTROLS)
    if bool(entry & _IA32E_MODE_GUEST) != lma:
        cpu.vmcs.cpu_write(F.VM_ENTRY_CONTROLS, entry ^ _IA32E_MODE_GUEST)


def vm_entry(cpu: "VmxCpu") -> VmExit | None:
    """SDM 26: VMRESUME. Returns an exit when entry fails or ends before any guest instruction."""
    vmcs = cpu.vmcs
    if vmcs.is_dirty():
        # 26.2 Checks on VMX controls and host-state area: failure is VMfailValid.
        failure = check_controls(vmcs, cpu.caps)
        if failure is not None:
            raise VmEntryFailed(str(failure))
        # 26.3 Checking and loading guest state: failure is a VM exit with reason bit 31.
        failure = check_guest_state(vmcs, cpu.caps)
        if failure is not None:
            return VmExit(ExitReason.ENTRY_FAILURE_GUEST_STATE, cpu.vcpu.rip,
                          qualification=int(failure.qualification), entry_failure=True,
                          detail=str(failure))
        vmcs.clear_dirty()
        cpu.reload_controls()
    # 26.4 Loading MSRs: no MSR-load area (count 0).
    # 26.5 Event injection.
    injected = _inject(cpu)
    if injected is not None:
        return injected
    # 26.6 Special features of VM entry / 26.7 VM exits immediately after entry: the caller
    # evaluates pending external interrupts, the interrupt window and the preemption timer.
    return None


def _inject(cpu: "VmxCpu") -> VmExit | None:
    """26.5.1: deliver the VM-entry interruption through the guest IDT as if it had occurred."""
    vmcs = cpu.vmcs
    raw = vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD)
    info = InterruptionInfo.decode(raw)
    if not info.valid:
        return None
    vmcs.cpu_write(F.VM_ENTRY_INTR_INFO_FIELD, 0)
    if info.type is InterruptionType.OTHER_EVENT:
        # 26.5.2: type 7, vector 0 injects a pending MTF VM exit (it happens before the
        # first guest instruction); nothing is delivered through the IDT.
        cpu.mtf_pending = True
        return None
    error = vmcs.read(F.VM_ENTRY_EXCEPTION_ERROR_CODE) if info.deliver_error_code else None
    event = Event(info.vector, EventType(int(info.type)), error)
    length = vmcs.read(F.VM_ENTRY_INSTRUCTION_LEN) if info.type.is_software else 0
    cpu.activity_on_injection()
    return deliver_event(cpu, event, cpu.vcpu.rip + length, info, error)


def deliver_event(cpu: "VmxCpu", event: Event, return_rip: int,
                  vectoring: InterruptionInfo | None = None, error: int | None = None
                  ) -> VmExit | None:
    """Deliver through the guest IDT. A triple fault, an EPT fault, or a fault the exception
    bitmap selects during delivery exits, with the event in the IDT-vectoring fields."""
    def exits(nested: Event) -> bool:
        return cpu.intercepts.exception_exits(nested.vector, nested.error_code)
    try:
        deliver(cpu.vcpu, event, return_rip, exits)
    except TripleFault:
        return VmExit(ExitReason.TRIPLE_FAULT, cpu.vcpu.rip, detail=f"while delivering vector {event.vector}")
    except TranslationFault as fault:
        exit = cpu.translation_exit(fault, fault_address=None)
        vectoring = vectoring or _as_interruption(event)
        return _with_vectoring(exit, vectoring, error if error is not None else event.error_code)
    except InterceptedFault as fault:
        exit = cpu.exception_exit(fault.event.vector, fault.event.error_code, fault.cr2, cpu.vcpu.rip)
        if fault.delivering is event:
            return _with_vectoring(exit, vectoring or _as_interruption(event),
                                   error if error is not None else event.error_code)
        return _with_vectoring(exit, _as_interruption(fault.delivering), fault.delivering.error_code)
    if event.type is EventType.HARDWARE_EXCEPTION:
        cpu.exceptions_delivered += 1   # a faulting instruction's step (vtemu.debug positions)
    return None


def _as_interruption(event: Event) -> InterruptionInfo:
    return InterruptionInfo(event.vector, InterruptionType(int(event.type)),
                            deliver_error_code=event.error_code is not None)


def _with_vectoring(exit: VmExit, info: InterruptionInfo, error: int | None) -> VmExit:
    """An exit during event delivery reports the event in the IDT-vectoring fields (27.2.4)."""
    return exit._replace(idt_vectoring=info, idt_vectoring_error=error)
