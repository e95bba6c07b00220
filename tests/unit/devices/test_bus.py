"""The port bus: overlap rejection, unclaimed ports, and ISA byte splitting."""

import pytest

from vtemu.devices.bus import BusConflict, MmioBus, PortBus


class Recorder:
    def __init__(self, value: int = 0) -> None:
        self.value = value
        self.accesses: list[tuple[str, int, int, int | None]] = []

    def io_read(self, offset: int, size: int) -> int:
        self.accesses.append(("r", offset, size, None))
        return self.value

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.accesses.append(("w", offset, size, value))


def test_overlapping_ports_are_rejected():
    bus = PortBus()
    bus.attach("a", 0x40, 4, Recorder())
    with pytest.raises(BusConflict, match="0x43 already belongs to a"):
        bus.attach("b", 0x43, 2, Recorder())


def test_unclaimed_port_reads_all_ones_and_counts():
    bus = PortBus()
    assert bus.read(0x1234, 2) == 0xFFFF
    bus.write(0x1234, 1, 5)
    assert bus.unclaimed_accesses[0x1234] == 2


def test_device_sees_offsets():
    bus = PortBus()
    device = Recorder(0x5A)
    bus.attach("dev", 0x3F8, 8, device)
    assert bus.read(0x3FD, 1) == 0x5A
    assert device.accesses == [("r", 5, 1, None)]


def test_wide_access_to_byte_device_is_split_across_ports():
    bus = PortBus()
    low, high = Recorder(0x34), Recorder(0x12)
    bus.attach("low", 0x20, 1, low)
    bus.attach("high", 0x21, 1, high)
    bus.write(0x20, 2, 0xBEEF)
    assert low.accesses == [("w", 0, 1, 0xEF)] and high.accesses == [("w", 0, 1, 0xBE)]
    assert bus.read(0x20, 2) == 0x1234


def test_word_wide_device_gets_the_whole_access():
    bus = PortBus()
    device = Recorder()
    bus.attach("fw_cfg", 0x510, 2, device, byte_wide=False)
    bus.write(0x510, 2, 0x19)
    assert device.accesses == [("w", 0, 2, 0x19)]


def test_mmio_overlap_rejected_and_routing():
    bus = MmioBus()

    class Page:
        def mmio_read(self, offset: int, size: int) -> int:
            return offset

        def mmio_write(self, offset: int, size: int, value: int) -> None:
            self.last = (offset, value)

    page = Page()
    bus.attach("apic", 0xFEE00000, 0x1000, page)
    with pytest.raises(BusConflict):
        bus.attach("other", 0xFEE00800, 0x100, page)
    assert bus.read(0xFEE00030, 4) == 0x30
    assert bus.read(0xFED00000, 4) is None
    assert bus.write(0xFEE000B0, 4, 0) and page.last == (0xB0, 0)


class BlockDevice(Recorder):
    """Offers the bulk string methods; records how it was called."""

    def io_read_string(self, offset: int, size: int, count: int) -> bytes:
        self.accesses.append(("R", offset, size, count))
        return bytes(range(count * size))

    def io_write_string(self, offset: int, size: int, data: bytes) -> None:
        self.accesses.append(("W", offset, size, len(data)))


def test_string_transfers_use_a_device_s_bulk_methods():
    bus = PortBus()
    device = BlockDevice()
    bus.attach("disk", 0x1F0, 8, device, byte_wide=False)
    assert bus.read_string(0x1F0, 2, 3) == bytes(range(6))
    bus.write_string(0x1F0, 2, b"abcd")
    assert device.accesses == [("R", 0, 2, 3), ("W", 0, 2, 4)]


def test_string_transfers_fall_back_to_single_accesses():
    bus = PortBus()
    device = Recorder(0x1234)
    bus.attach("dev", 0x60, 4, device, byte_wide=False)
    assert bus.read_string(0x60, 2, 2) == bytes.fromhex("3412 3412")
    bus.write_string(0x60, 2, bytes.fromhex("0100 0200"))
    assert device.accesses == [("r", 0, 2, None), ("r", 0, 2, None), ("w", 0, 2, 1), ("w", 0, 2, 2)]
    assert bus.read_string(0x9999, 1, 2) == b"\xff\xff"          # unclaimed: open bus
