"""cr3switch: eight address spaces sharing the kernel map, each with a private page at the
same virtual address; 2048 round-robin MOV CR3 switches never show a stale translation."""

from __future__ import annotations

EXPECTED = (
    b"cr3switch: 8 address spaces, private page at 0x8000000000 in each\n"
    b"spaces built\n"
    b"boot space: #PF on V, error 0, CR2 ok\n"
    b"CR3 switches 2048 (256 rounds), every visit saw its own page and count\n"
    b"counters: 256 256 256 256 256 256 256 256\n"
    b"cr3switch done\n"
)


def test_serial_and_exit_status(boot) -> None:
    run = boot("cr3switch")
    assert run.serial == EXPECTED
    assert run.exit_code == 0
