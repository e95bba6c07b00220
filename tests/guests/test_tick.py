"""tick: PIC + PIT interrupts in protected mode, on deterministic guest time."""

from __future__ import annotations

from vtemu.hv.outcome import Halt, Resume
from vtemu.vmx.reasons import ExitReason

EXPECTED = (
    b"tick: own GDT and IDT loaded\n"
    b"PIC remapped to 0x20, PIT at 100 Hz\n"
    b"tick 10\ntick 20\ntick 30\ntick 40\ntick 50\n"
    b"50 ticks\n"
)
PIT_HZ = 1_193_182
DIVISOR = 11932
PERIOD_NS = DIVISOR * 1_000_000_000 / PIT_HZ    # 10000150.6 ns


def test_serial_and_exit_status(boot) -> None:
    run = boot("tick")
    assert run.serial == EXPECTED
    assert run.exit_code == 0


def test_fifty_timer_interrupts_through_vector_0x20(boot) -> None:
    irqs = [r for r in boot("tick").exits if r.reason is ExitReason.EXTERNAL_INTERRUPT]
    assert len(irqs) == 50
    assert {r.exit.interruption.vector for r in irqs} == {0x20}


def test_interrupts_are_one_pit_period_apart(boot) -> None:
    """Rate generator: one IRQ per 11932 PIT clocks, i.e. ceil/floor of 10000150.6 ns. (The
    first interval also holds the clock edge on which the count is loaded, so it is skipped.)"""
    times = [r.time_ns for r in boot("tick").exits if r.reason is ExitReason.EXTERNAL_INTERRUPT]
    intervals = [b - a for a, b in zip(times, times[1:])]
    assert all(int(PERIOD_NS) <= gap <= int(PERIOD_NS) + 1 for gap in intervals[1:])
    assert times[-1] >= 48 * PERIOD_NS


def test_idle_loop_halts_between_ticks(boot) -> None:
    hlts = [r for r in boot("tick").exits if r.reason is ExitReason.HLT]
    assert len(hlts) == 50
    # The first HLT finds IRQ 0 already requested: writing the mode-2 control word raises the
    # counter's OUT (idle, low, since reset), an edge the 8259 latches at once, so it resumes.
    # Every later HLT waits for the next period.
    assert [type(r.outcome) for r in hlts] == [Resume] + [Halt] * 49
    # guest time mostly skipped while halted, not executed
    partition = boot("tick").partition
    assert partition.clock.idle_ns > 0.95 * partition.clock.peek_ns()
