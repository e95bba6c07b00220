"""Small guests that each pin one behaviour vtemu got wrong (see each xfail's reason)."""

from __future__ import annotations

import pytest

IOPERM = (
    b"ioperm: ring 3 with IOPL 0 and no I/O bitmap\n"
    b"#GP at out 0x3f8: error 00000000 from cpl 00000003\n"
    b"#GP at in 0x3fd: error 00000000 from cpl 00000003\n"
    b"kernel: I/O bitmap allows 0x3f8-0x3ff\n"
    b"ring 3 prints through the I/O bitmap\n"
    b"#GP at out 0x80: error 00000000 from cpl 00000003\n"
    b"kernel: IOPL 3\n"
    b"ring 3 with IOPL 3 writes port 0x80\n"
    b"ring 3 writes isa-debug-exit\n"
)
SEGACCESS = (
    b"segaccess: CS and SS from descriptors with the accessed bit clear\n"
    b"tick with unaccessed descriptors\n"
)
NONCANONICAL = (
    b"noncanonical: 64-bit IDT loaded\n"
    b"#GP error 00000000 rip ok\n"
    b"#GP error 00000000 rip ok\n"
    b"noncanonical done\n"
)


def test_ioperm(boot) -> None:
    run = boot("ioperm")
    assert run.serial == IOPERM
    assert run.exit_code == 0


def test_segaccess(boot) -> None:
    run = boot("segaccess")
    assert run.serial == SEGACCESS
    assert run.exit_code == 0


def test_noncanonical(boot) -> None:
    run = boot("noncanonical")
    assert run.serial == NONCANONICAL
    assert run.exit_code == 0
