"""hello: the serial line, and the exact VM exits that produced it."""

from __future__ import annotations

import struct

from tests.guests.harness import GuestRun, guest_image
from vtemu.hv.outcome import Resume, Shutdown
from vtemu.vmx.qualifications import IoDirection
from vtemu.vmx.reasons import ExitReason

GREETING = b"Hello from a vtemu guest!\n"
COM1, LCR, LSR, DEBUG_EXIT = 0x3F8, 0x3FB, 0x3FD, 0xF4
LCR_DLAB = 0x80


def _entry_point() -> int:
    """entry_addr of the multiboot header's a.out kludge (offset 28 of the header at 0)."""
    return struct.unpack_from("<I", guest_image("hello"), 28)[0]


def _guest_exits(run: GuestRun) -> list:
    """The exits from the first one at or after the kernel's entry point (firmware's before)."""
    entry = _entry_point()
    first = next(i for i, r in enumerate(run.exits) if r.exit.guest_rip >= entry)
    return run.exits[first:]


def test_serial_and_exit_status(boot) -> None:
    run = boot("hello")
    assert run.serial == GREETING
    assert run.exit_code == 0
    assert run.reason == "the guest wrote to isa-debug-exit"


def test_only_io_exits_after_entry(boot) -> None:
    exits = _guest_exits(boot("hello"))
    assert {r.reason for r in exits} == {ExitReason.IO_INSTRUCTION}
    # SERIAL_INIT (7 OUTs), one LSR poll + one THR write per byte, the exit write
    assert len(exits) == 7 + 2 * len(GREETING) + 1


def test_com1_data_writes_carry_the_printed_bytes(boot) -> None:
    """Each byte reaches COM1 as one OUT DX, AL exit (1 byte, port in DX, not string); the
    writes to port 3F8h made with LCR.DLAB = 0 (after the divisor latch) are exactly the text."""
    dlab = False
    printed = bytearray()
    for record in _guest_exits(boot("hello")):
        io = record.io()
        if io.direction is not IoDirection.OUT:
            continue
        if io.port == LCR:
            dlab = bool(record.out_value & LCR_DLAB)
        if io.port == COM1:
            assert (io.size, io.string, io.rep, io.immediate) == (1, False, False, False)
            assert record.exit.instruction_length == 1
            if not dlab:
                printed.append(record.out_value)
    assert bytes(printed) == GREETING


def test_every_byte_is_preceded_by_an_lsr_poll(boot) -> None:
    exits = _guest_exits(boot("hello"))
    data = exits[7:-1]  # after SERIAL_INIT, before the exit write
    pairs = [(r.io().direction, r.io().port) for r in data]
    assert pairs == [(IoDirection.IN, LSR), (IoDirection.OUT, COM1)] * len(GREETING)
    assert all(isinstance(r.outcome, Resume) for r in exits[:-1])


def test_last_exit_is_the_debug_exit_write(boot) -> None:
    last = _guest_exits(boot("hello"))[-1]
    io = last.io()
    assert (io.direction, io.port, io.size) == (IoDirection.OUT, DEBUG_EXIT, 4)
    assert last.out_value == 0
    assert last.outcome == Shutdown(0, "the guest wrote to isa-debug-exit")
