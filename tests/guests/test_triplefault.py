"""triplefault: a deliberate triple fault ends the partition with RunEnd.TRIPLE_FAULT."""

from __future__ import annotations

from vtemu.hv.outcome import RunEnd, Shutdown
from vtemu.vmx.reasons import ExitReason

EXPECTED = b"triplefault: IDT limit 0, dividing by zero\n"


def test_serial_then_triple_fault(boot) -> None:
    run = boot("triplefault")
    assert run.serial == EXPECTED
    assert run.exit_code == RunEnd.TRIPLE_FAULT == 70
    assert run.reason.startswith("triple fault")
    assert run.partition.result.dump  # the CLI prints a state dump on stderr


def test_last_exit_is_a_triple_fault_exit(boot) -> None:
    """Triple fault in VMX non-root operation is a VM exit (reason 2), at the DIV."""
    last = boot("triplefault").exits[-1]
    assert last.reason is ExitReason.TRIPLE_FAULT
    assert isinstance(last.outcome, Shutdown)
    assert last.exit.instruction is None or last.exit.guest_rip >= 0x100000
    assert last.exit.guest_rip >= 0x100000
