"""echo: COM1 input by interrupt (IRQ 4 through the 8259 as vector 24h), answered line by line."""

from __future__ import annotations

from tests.guests.harness import run_guest
from vtemu.hv.outcome import RunEnd
from vtemu.vmx.reasons import ExitReason

PROMPT = b'echo: type lines, "quit" ends\n'


def test_each_line_comes_back_in_upper_case(boot) -> None:
    run = boot("echo")
    assert run.serial == PROMPT + b"> HELLO, VTEMU\n> SECOND LINE 2\n> QUIT\necho: 3 lines\n"
    assert run.exit_code == 3


def test_input_arrives_by_interrupt_and_the_guest_reads_every_byte(boot) -> None:
    run = boot("echo")
    irqs = [r for r in run.exits if r.reason is ExitReason.EXTERNAL_INTERRUPT]
    assert irqs and {r.exit.interruption.vector for r in irqs} == {0x24}
    rbr_reads = [r for r in run.exits if r.reason is ExitReason.IO_INSTRUCTION
                 and r.io().port == 0x3F8 and r.io().direction.name == "IN"]
    assert len(rbr_reads) == len(b"hello, vtemu\nSecond line 2\nquit\n")


def test_input_that_ends_without_quit_leaves_the_guest_halted_for_good() -> None:
    run = run_guest("echo", serial_input=b"abc\n")
    assert run.serial == PROMPT + b"> ABC\n"
    assert run.exit_code == RunEnd.HALTED_FOREVER


def test_carriage_returns_are_dropped_and_long_lines_cut() -> None:
    run = run_guest("echo", serial_input=b"a\r\n" + b"x" * 250 + b"\nquit\n")
    assert run.serial == PROMPT + b"> A\n> " + b"X" * 200 + b"\n> QUIT\necho: 3 lines\n"
