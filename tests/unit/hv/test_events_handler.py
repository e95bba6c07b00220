"""Event exits fed to the hypervisor: exceptions (0) reflected, external interrupts (1) queued and
injected or waited for with interrupt-window exiting (7), triple fault (2) and failed entries."""

from __future__ import annotations

import pytest

from tests.unit.hv.fakes import Rig
from vtemu.hv.outcome import Resume, RunEnd, Shutdown
from vtemu.vmx.controls import PrimaryProcessorControls as P
from vtemu.vmx.exit import VmExit
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.guest_state import BLOCKING_BY_STI
from vtemu.vmx.interruption import InterruptionInfo, InterruptionType
from vtemu.vmx.reasons import ExitReason

RFLAGS_IF = 1 << 9


@pytest.fixture
def rig() -> Rig:
    rig = Rig()
    rig.protected_mode()
    return rig


def _window(rig: Rig) -> bool:
    return bool(rig.cpu.vmcs.read(F.CPU_BASED_VM_EXEC_CONTROL) & P.INTERRUPT_WINDOW_EXITING)


def _external(vector: int | None, rip: int = 0x10000) -> VmExit:
    info = None if vector is None else InterruptionInfo.external_interrupt(vector)
    return VmExit(ExitReason.EXTERNAL_INTERRUPT, rip, interruption=info)


# --- exception reflection --------------------------------------------------------------------

def test_page_fault_is_reflected_with_its_error_code_and_cr2(rig: Rig) -> None:
    rig.vcpu.rip = 0x10000
    exit = VmExit(ExitReason.EXCEPTION_OR_NMI, 0x10000, qualification=0xDEAD_B000,
                  interruption=InterruptionInfo.exception(14, error_code=True), interruption_error=0x6)
    assert isinstance(rig.handle(exit), Resume)
    assert rig.get("cr2") == 0xDEAD_B000
    assert rig.cpu.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) == 0x80000B0E
    assert rig.injected_error() == 0x6
    assert rig.get("rip") == 0x10000


def test_general_protection_is_reflected_unchanged(rig: Rig) -> None:
    rig.set(cr2=0x1234)
    exit = VmExit(ExitReason.EXCEPTION_OR_NMI, 0x10000,
                  interruption=InterruptionInfo.exception(13, error_code=True), interruption_error=0x18)
    rig.handle(exit)
    assert rig.cpu.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) == 0x80000B0D
    assert rig.injected_error() == 0x18
    assert rig.get("cr2") == 0x1234               # only #PF touches CR2


def test_int3_is_reflected_as_a_software_exception_with_its_length(rig: Rig) -> None:
    info = InterruptionInfo(3, InterruptionType.SOFTWARE_EXCEPTION)
    rig.handle(VmExit(ExitReason.EXCEPTION_OR_NMI, 0x10000, instruction_length=1, interruption=info))
    injected = rig.injected()
    assert injected is not None
    assert (injected.vector, injected.type) == (3, InterruptionType.SOFTWARE_EXCEPTION)
    assert rig.cpu.vmcs.read(F.VM_ENTRY_INSTRUCTION_LEN) == 1


# --- external interrupts ---------------------------------------------------------------------

def test_external_interrupt_is_injected_when_the_guest_is_interruptible(rig: Rig) -> None:
    rig.set(rflags=0x2 | RFLAGS_IF)
    assert isinstance(rig.handle(_external(0x30)), Resume)
    assert rig.cpu.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) == 0x8000_0030
    assert not _window(rig)
    assert rig.partition.pending_vectors(rig.cpu) == []


def test_external_interrupt_waits_for_the_window_while_if_is_clear(rig: Rig) -> None:
    rig.set(rflags=0x2)
    rig.handle(_external(0x30))
    assert rig.injected() is None
    assert _window(rig)
    assert rig.partition.pending_vectors(rig.cpu) == [0x30]


def test_external_interrupt_waits_for_the_window_in_an_sti_shadow(rig: Rig) -> None:
    rig.set(rflags=0x2 | RFLAGS_IF)
    rig.cpu.vmcs.write(F.GUEST_INTERRUPTIBILITY_INFO, BLOCKING_BY_STI)
    rig.handle(_external(0x31))
    assert rig.injected() is None and _window(rig)


def test_interrupt_window_injects_the_oldest_and_keeps_waiting_for_the_rest(rig: Rig) -> None:
    rig.set(rflags=0x2)
    rig.handle(_external(0x30))
    rig.handle(_external(0x31))
    rig.set(rflags=0x2 | RFLAGS_IF)
    rig.cpu.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, 0)
    assert isinstance(rig.handle(VmExit(ExitReason.INTERRUPT_WINDOW, 0x10000)), Resume)
    assert rig.injected() == InterruptionInfo.external_interrupt(0x30)
    assert _window(rig)                            # 31h is still waiting
    rig.cpu.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, 0)   # VM entry delivered 30h
    rig.handle(VmExit(ExitReason.INTERRUPT_WINDOW, 0x10000))
    assert rig.injected() == InterruptionInfo.external_interrupt(0x31)
    assert not _window(rig)                        # nothing left: the control is cleared


def test_no_second_injection_while_one_is_programmed(rig: Rig) -> None:
    rig.set(rflags=0x2 | RFLAGS_IF)
    rig.cpu.inject(InterruptionInfo.exception(13, error_code=True), 0)
    rig.handle(_external(0x30))
    assert rig.injected() == InterruptionInfo.exception(13, error_code=True)
    assert _window(rig) and rig.partition.pending_vectors(rig.cpu) == [0x30]


def test_external_interrupt_without_acknowledge_on_exit_acknowledges_the_pic(rig: Rig) -> None:
    rig.init_pic(base=0x20)
    rig.raise_irq(3)
    assert rig.partition.pic.intr_asserted()
    rig.set(rflags=0x2 | RFLAGS_IF)
    rig.handle(_external(None))
    assert rig.injected() == InterruptionInfo.external_interrupt(0x23)
    assert not rig.partition.pic.intr_asserted()


# --- shutdown paths --------------------------------------------------------------------------

def test_triple_fault_shuts_the_partition_down(rig: Rig) -> None:
    outcome = rig.handle(VmExit(ExitReason.TRIPLE_FAULT, 0x10000, detail="while delivering vector 8"))
    assert isinstance(outcome, Shutdown)
    assert outcome.exit_code == RunEnd.TRIPLE_FAULT == 70
    assert "triple fault" in outcome.reason and outcome.dump


def test_triple_fault_through_the_dispatcher_ends_the_partition(rig: Rig) -> None:
    rig.dispatch(VmExit(ExitReason.TRIPLE_FAULT, 0x10000))
    assert rig.partition.ended and rig.partition.result is not None
    assert rig.partition.result.exit_code == RunEnd.TRIPLE_FAULT
    assert rig.cpu.stopped


def test_entry_failure_ends_with_the_rule_that_failed(rig: Rig) -> None:
    exit = VmExit(ExitReason.ENTRY_FAILURE_GUEST_STATE, 0x10000, entry_failure=True,
                  detail="guest RFLAGS 0x8002: bit 15 must be 0")
    outcome = rig.handle(exit)
    assert isinstance(outcome, Shutdown)
    assert outcome.exit_code == RunEnd.UNHANDLED_EXIT
    assert "RFLAGS" in outcome.reason


def test_pending_vectors_are_per_vcpu() -> None:
    rig = Rig(vcpus=2, index=1)
    rig.protected_mode()
    rig.set(rflags=0x2)
    rig.handle(_external(0x30))
    assert rig.partition.pending_vectors(rig.cpu) == [0x30]
    assert rig.partition.pending_vectors(rig.partition.vcpus[0]) == []
