"""paging32: 32-bit paging with 4 MiB (CR4.PSE) and 4 KiB pages, aliases, and #PF in
32-bit protected mode (not present, write, PDE level, read-only with CR0.WP)."""

from __future__ import annotations

EXPECTED = (
    b"paging32: tagging frames at 8, 12, 20, 24 MiB\n"
    b"paging on: CR4.PSE, 4 KiB pages below 4 MiB, 4 MiB pages to 128 MiB\n"
    b"4 MiB aliases at 0x80000000: 8 reads and 2 writes ok\n"
    b"4 KiB aliases at 0xc0000000 (frames reversed): 32 reads ok\n"
    b"#PF read, PTE not present: error 0, CR2 ok; mapped, read ok\n"
    b"#PF write, PTE not present: error 2, CR2 ok; mapped, write ok\n"
    b"#PF read, 4 MiB PDE not present: error 0, CR2 ok; mapped, read ok\n"
    b"#PF write, read-only PTE (CR0.WP = 1): error 3, CR2 ok; R/W set, write ok\n"
    b"paging32 done\n"
)


def test_serial_and_exit_status(boot) -> None:
    run = boot("paging32")
    assert run.serial == EXPECTED
    assert run.exit_code == 0
