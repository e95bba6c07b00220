"""ptemod: a live PTE rewritten hundreds of times, each change made visible by INVLPG or
MOV CR3; not-present and read-only mappings fault with the right error code and CR2."""

from __future__ import annotations

EXPECTED = (
    b"ptemod: V = 0x40000000 remapped among 8 frames, 512 iterations\n"
    b"PTE rewrites 512 (INVLPG 448, MOV CR3 64)\n"
    b"reads through V saw the new frame: 384\n"
    b"writes through V reached the new frame: 128\n"
    b"#PF not present (error 0, CR2 ok): 128\n"
    b"#PF write to read-only (error 3, CR2 ok): 128\n"
    b"ptemod done\n"
)


def test_serial_and_exit_status(boot) -> None:
    run = boot("ptemod")
    assert run.serial == EXPECTED
    assert run.exit_code == 0
