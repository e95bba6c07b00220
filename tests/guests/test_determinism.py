"""Guest time follows guest progress: the same image takes the same exits every run."""

from __future__ import annotations

from tests.guests.harness import run_guest
from vtemu.vmx.reasons import ExitReason


def test_tick_exit_sequence_is_identical_run_to_run() -> None:
    first, second = run_guest("tick"), run_guest("tick")
    assert first.serial == second.serial
    signature = first.exit_signature()
    assert signature == second.exit_signature()
    assert [r.time_ns for r in first.exits] == [r.time_ns for r in second.exits]
    # the sequence is not trivially empty: timer interrupts at counted instruction boundaries
    irqs = [s for s in signature if s[0] == ExitReason.EXTERNAL_INTERRUPT.name]
    assert len(irqs) == 50
    assert len({s[3] for s in irqs}) > 1
