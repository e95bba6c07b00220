"""I/O and MSR bitmaps: layout (SDM 24.6.4, 24.6.9) and exit decisions (SDM 25.1.3)."""

from __future__ import annotations

import pytest

from vtemu.vmx.bitmaps import (
    BITMAP_SIZE,
    IoBitmaps,
    MsrBitmap,
    io_access_exits,
    io_instruction_exits,
    msr_access_exits,
    msr_instruction_exits,
)
from vtemu.vmx.controls import PrimaryProcessorControls as Pri


def test_io_bitmap_layout() -> None:
    bitmaps = IoBitmaps()
    assert len(bitmaps.a) == len(bitmaps.b) == BITMAP_SIZE == 4096
    bitmaps.set(0x3F8)  # COM1: bitmap A, byte 3F8h >> 3 = 7Fh, bit 0
    assert bitmaps.a[0x7F] == 0x01 and not any(bitmaps.b)
    bitmaps.set(0x8007)  # bitmap B, byte 0, bit 7
    assert bitmaps.b[0] == 0x80
    bitmaps.set(0xFFFF)  # last bit of bitmap B
    assert bitmaps.b[0xFFF] == 0x80
    bitmaps.clear(0x3F8)
    assert not bitmaps.test(0x3F8) and bitmaps.test(0x8007)


def test_io_range_helpers() -> None:
    bitmaps = IoBitmaps()
    bitmaps.set(0x3F8, 8)
    assert all(bitmaps.test(port) for port in range(0x3F8, 0x400)) and not bitmaps.test(0x400)
    with pytest.raises(ValueError):
        bitmaps.set(0x1_0000)


@pytest.mark.parametrize(
    ("port", "size", "exits"),
    [
        (0x3F8, 1, True),
        (0x3F7, 1, False),
        (0x3F7, 2, True),  # touches 3F8h: any set bit makes the access exit
        (0x3F5, 4, True),
        (0x3F4, 4, False),
        (0x7FFF, 2, True),  # spans bitmaps A and B; 8000h is set in B
        (0xFFFE, 2, False),  # ends exactly at FFFFh: no wrap
        (0xFFFE, 4, True),  # wraps past FFFFh to 0000h: always exits
        (0xFFFF, 2, True),
    ],
)
def test_io_access_exits(port: int, size: int, exits: bool) -> None:
    bitmaps = IoBitmaps()
    bitmaps.set(0x3F8)
    bitmaps.set(0x8000)
    assert io_access_exits(bitmaps.a, bitmaps.b, port, size) is exits
    assert bitmaps.exits(port, size) is exits


def test_io_access_size_must_be_architectural() -> None:
    with pytest.raises(ValueError):
        io_access_exits(bytes(BITMAP_SIZE), bytes(BITMAP_SIZE), 0x60, 3)


def test_io_instruction_exits_follows_the_controls() -> None:
    a, b = bytes(BITMAP_SIZE), bytes(BITMAP_SIZE)
    assert io_instruction_exits(Pri.UNCONDITIONAL_IO_EXITING, a, b, 0x60, 1)
    assert not io_instruction_exits(Pri(0), a, b, 0x60, 1)
    # With "use I/O bitmaps" the bitmaps decide and "unconditional I/O exiting" is ignored.
    assert not io_instruction_exits(Pri.USE_IO_BITMAPS | Pri.UNCONDITIONAL_IO_EXITING, a, b, 0x60, 1)
    assert io_instruction_exits(Pri.USE_IO_BITMAPS, a, b, 0xFFFF, 2)


def test_msr_bitmap_layout() -> None:
    bitmap = MsrBitmap()
    bitmap.set(0x10, write=False)  # IA32_TIME_STAMP_COUNTER read: read-low region, byte 2, bit 0
    assert bitmap.data[2] == 0x01
    bitmap.set(0xC000_0080, read=False)  # IA32_EFER write: write-high region at 3072, byte 3072 + 10h
    assert bitmap.data[3072 + 0x10] == 0x01
    bitmap.set(0x1FFF, read=False)  # last low MSR, write-low region at 2048: byte 2048 + 3FFh, bit 7
    assert bitmap.data[2048 + 0x3FF] == 0x80
    bitmap.set(
        0xC000_0101, write=False
    )  # IA32_GS_BASE read: read-high region at 1024, byte 1024 + 20h, bit 1
    assert bitmap.data[1024 + 0x20] == 0x02
    assert sum(bin(byte).count("1") for byte in bitmap.data) == 4


@pytest.mark.parametrize(
    ("msr", "write", "exits"),
    [
        (0x10, False, True),
        (0x10, True, False),  # reads and writes have separate bits
        (0xC000_0080, True, True),
        (0xC000_0080, False, False),
        (0x1FFF, False, False),
        (0x2000, False, True),  # just past the low range
        (0x4000_0000, True, True),  # hypervisor range: outside both, always exits
        (0xBFFF_FFFF, False, True),
        (0xC000_2000, True, True),  # just past the high range
    ],
)
def test_msr_access_exits(msr: int, write: bool, exits: bool) -> None:
    bitmap = MsrBitmap()
    bitmap.set(0x10, write=False)
    bitmap.set(0xC000_0080, read=False)
    assert msr_access_exits(bitmap.data, msr, write) is exits


def test_msr_bitmap_clear_and_range() -> None:
    bitmap = MsrBitmap()
    bitmap.set(0x174)
    bitmap.clear(0x174, read=False)
    assert bitmap.test(0x174, write=True) is False and bitmap.test(0x174, write=False) is True
    with pytest.raises(ValueError):
        bitmap.set(0x4000_0000)


def test_msr_instruction_exits_without_bitmaps() -> None:
    empty = bytes(BITMAP_SIZE)
    assert msr_instruction_exits(Pri(0), empty, 0x10, False)
    assert not msr_instruction_exits(Pri.USE_MSR_BITMAPS, empty, 0x10, False)
    assert msr_instruction_exits(Pri.USE_MSR_BITMAPS, empty, 0x4000_0000, False)
