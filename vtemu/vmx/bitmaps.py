"""I/O bitmaps and the MSR bitmap: layouts (SDM 24.6.4, 24.6.9) and exit decisions (SDM 25.1.3).

I/O bitmap A covers ports 0000h-7FFFh and bitmap B ports 8000h-FFFFh, one bit per port, 4 KiB
each. The MSR bitmap is one 4 KiB page of four 1 KiB bitmaps:

    bytes    0-1023  read bitmap for low MSRs  (00000000h-00001FFFh)
    bytes 1024-2047  read bitmap for high MSRs (C0000000h-C0001FFFh)
    bytes 2048-3071  write bitmap for low MSRs
    bytes 3072-4095  write bitmap for high MSRs

A set bit makes the access exit. The bitmaps are plain bytes in the format the SDM gives, so
the same page can live in guest-visible memory for a nested hypervisor.
"""

from __future__ import annotations

from vtemu.vmx.controls import PrimaryProcessorControls

BITMAP_SIZE = 4096
IO_PORTS_PER_BITMAP = 0x8000
IO_PORT_LIMIT = 0x10000
LOW_MSR_BASE = 0x0000_0000
HIGH_MSR_BASE = 0xC000_0000
MSR_RANGE = 0x2000
_MSR_READ_LOW, _MSR_READ_HIGH, _MSR_WRITE_LOW, _MSR_WRITE_HIGH = 0, 1024, 2048, 3072

Bitmap = bytes | bytearray | memoryview


def _test_bit(bitmap: Bitmap, bit_index: int) -> bool:
    return bool(bitmap[bit_index >> 3] >> (bit_index & 7) & 1)


def _assign_bit(bitmap: bytearray, bit_index: int, value: bool) -> None:
    if value:
        bitmap[bit_index >> 3] |= 1 << (bit_index & 7)
    else:
        bitmap[bit_index >> 3] &= ~(1 << (bit_index & 7)) & 0xFF


# --- I/O bitmaps ----------------------------------------------------------------------------


class IoBitmaps:
    """Bitmaps A and B as two 4 KiB byte arrays (SDM 24.6.4)."""

    def __init__(self) -> None:
        self.a = bytearray(BITMAP_SIZE)
        self.b = bytearray(BITMAP_SIZE)

    def _locate(self, port: int) -> tuple[bytearray, int]:
        if not 0 <= port < IO_PORT_LIMIT:
            raise ValueError(f"port {port:#x} is outside the 16-bit I/O space")
        return (self.a, port) if port < IO_PORTS_PER_BITMAP else (self.b, port - IO_PORTS_PER_BITMAP)

    def set(self, port: int, count: int = 1) -> None:
        """Make accesses to ports port .. port+count-1 exit."""
        for p in range(port, port + count):
            _assign_bit(*self._locate(p), True)

    def clear(self, port: int, count: int = 1) -> None:
        for p in range(port, port + count):
            _assign_bit(*self._locate(p), False)

    def test(self, port: int) -> bool:
        return _test_bit(*self._locate(port))

    def exits(self, port: int, size: int) -> bool:
        return io_access_exits(self.a, self.b, port, size)


def io_access_exits(bitmap_a: Bitmap, bitmap_b: Bitmap, port: int, size: int) -> bool:
    """SDM 25.1.3, "use I/O bitmaps" = 1: does an access of `size` bytes at `port` exit?

    It exits if the bit of ANY port it touches is 1, or if it wraps around the 16-bit I/O space
    (touches FFFFh and 0000h) regardless of the bitmaps.
    """
    if size not in (1, 2, 4):
        raise ValueError(f"I/O access size {size} is not 1, 2 or 4")
    if port + size > IO_PORT_LIMIT:
        return True
    for p in range(port, port + size):
        bitmap, bit_index = (bitmap_a, p) if p < IO_PORTS_PER_BITMAP else (bitmap_b, p - IO_PORTS_PER_BITMAP)
        if _test_bit(bitmap, bit_index):
            return True
    return False


def io_instruction_exits(
    controls: PrimaryProcessorControls, bitmap_a: Bitmap, bitmap_b: Bitmap, port: int, size: int
) -> bool:
    """SDM 25.1.3: the I/O bitmaps decide when used; otherwise "unconditional I/O exiting" does."""
    if controls & PrimaryProcessorControls.USE_IO_BITMAPS:
        return io_access_exits(bitmap_a, bitmap_b, port, size)
    return bool(controls & PrimaryProcessorControls.UNCONDITIONAL_IO_EXITING)


# --- MSR bitmap -----------------------------------------------------------------------------


def _msr_bit(msr: int, write: bool) -> int | None:
    """Bit index of an MSR access in the 4 KiB MSR bitmap, or None outside both ranges."""
    if LOW_MSR_BASE <= msr < LOW_MSR_BASE + MSR_RANGE:
        region = _MSR_WRITE_LOW if write else _MSR_READ_LOW
        offset = msr - LOW_MSR_BASE
    elif HIGH_MSR_BASE <= msr < HIGH_MSR_BASE + MSR_RANGE:
        region = _MSR_WRITE_HIGH if write else _MSR_READ_HIGH
        offset = msr - HIGH_MSR_BASE
    else:
        return None
    return region * 8 + offset


class MsrBitmap:
    """The 4 KiB MSR bitmap (SDM 24.6.9) as one byte array."""

    def __init__(self) -> None:
        self.data = bytearray(BITMAP_SIZE)

    def _bit(self, msr: int, write: bool) -> int:
        bit_index = _msr_bit(msr, write)
        if bit_index is None:
            raise ValueError(f"MSR {msr:#x} has no bit in the MSR bitmap (it always exits)")
        return bit_index

    def set(self, msr: int, *, read: bool = True, write: bool = True) -> None:
        """Make the chosen kinds of access to `msr` exit."""
        if read:
            _assign_bit(self.data, self._bit(msr, False), True)
        if write:
            _assign_bit(self.data, self._bit(msr, True), True)

    def clear(self, msr: int, *, read: bool = True, write: bool = True) -> None:
        if read:
            _assign_bit(self.data, self._bit(msr, False), False)
        if write:
            _assign_bit(self.data, self._bit(msr, True), False)

    def test(self, msr: int, *, write: bool) -> bool:
        return msr_access_exits(self.data, msr, write)


def msr_access_exits(msr_bitmap: Bitmap, msr: int, write: bool) -> bool:
    """SDM 25.1.3 with "use MSR bitmaps" = 1: the bitmap bit decides; other MSRs always exit."""
    bit_index = _msr_bit(msr, write)
    return True if bit_index is None else _test_bit(msr_bitmap, bit_index)


def msr_instruction_exits(
    controls: PrimaryProcessorControls, msr_bitmap: Bitmap, msr: int, write: bool
) -> bool:
    """SDM 25.1.3: RDMSR/WRMSR always exit without "use MSR bitmaps", else per the bitmap."""
    if not controls & PrimaryProcessorControls.USE_MSR_BITMAPS:
        return True
    return msr_access_exits(msr_bitmap, msr, write)
