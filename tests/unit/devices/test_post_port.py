"""POST port 80h: codes are recorded, reads float high as on QEMU."""

from __future__ import annotations

from vtemu.devices.post_port import HISTORY_LENGTH, PostPort


def test_no_code_before_the_first_write() -> None:
    port = PostPort()
    assert port.last_code is None
    assert port.writes == 0


def test_writes_record_last_code_history_and_counts() -> None:
    port = PostPort()
    for code in (0x10, 0x55, 0x10):
        port.io_write(0, 1, code)
    assert port.last_code == 0x10
    assert list(port.history) == [0x10, 0x55, 0x10]
    assert port.counts[0x10] == 2 and port.counts[0x55] == 1
    assert port.writes == 3


def test_reads_return_all_ones_whatever_was_written() -> None:
    port = PostPort()
    port.io_write(0, 1, 0x42)
    assert port.io_read(0, 1) == 0xFF
    assert port.io_read(0, 2) == 0xFFFF


def test_wide_write_keeps_the_low_byte() -> None:
    port = PostPort()
    port.io_write(0, 2, 0xABCD)
    assert port.last_code == 0xCD


def test_history_is_bounded_for_io_delay_writers() -> None:
    port = PostPort()
    for i in range(HISTORY_LENGTH + 10):
        port.io_write(0, 1, i & 0xFF)
    assert len(port.history) == HISTORY_LENGTH
    assert port.history[0] == 10
    assert port.writes == HISTORY_LENGTH + 10
