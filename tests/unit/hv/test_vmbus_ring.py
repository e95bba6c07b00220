"""VMBus ring buffers in a real partition's RAM: both ends driven from the host side."""

from __future__ import annotations

import struct

import pytest

from vtemu.hv.memory import PartitionMemory, create_rom
from vtemu.hv.vmbus.errors import HvStatus, VmbusError
from vtemu.hv.vmbus.memory import GuestRam
from vtemu.hv.vmbus.ring import (INTERRUPT_MASK, PACKET_DATA_INBAND, READ_INDEX,
                                 WRITE_INDEX, Packet, Ring)
from vtemu.machine import layout
from vtemu.machine.memory import HostMemory

RAM = 16 << 20
HEADER, DATA = 0x200000, 0x300000      # the data page far from the header: a GPA list


@pytest.fixture
def ram() -> GuestRam:
    host = HostMemory()
    rom = create_rom(host, bytes(layout.ROM_SIZE))
    return GuestRam(PartitionMemory(0, RAM, host, rom))


def ring(ram: GuestRam, data_pages: int = 1) -> Ring:
    return Ring(ram, [HEADER] + [DATA + 0x2000 * i for i in range(data_pages)])


def packet(n: int, size: int = 40) -> Packet:
    return Packet(PACKET_DATA_INBAND, n, bytes([n]) * size)


def test_packets_come_out_in_order_with_their_descriptor(ram: GuestRam) -> None:
    r = ring(ram)
    sent = [packet(1, 5), packet(2, 16), Packet(11, 0x1122334455667788, b"xyz", flags=1)]
    for p in sent:
        r.write_packet(p)
    got = [r.read_packet() for _ in sent]
    assert [(p.type, p.transaction_id, p.flags, p.payload[:len(s.payload)])
            for p, s in zip(got, sent)] == [(s.type, s.transaction_id, s.flags, s.payload)
                                             for s in sent]
    assert all(len(p.payload) % 8 == 0 for p in got)       # padded to 8 bytes
    assert r.read_packet() is None and r.is_empty()


def test_the_layout_in_guest_memory(ram: GuestRam) -> None:
    r = ring(ram)
    r.write_packet(Packet(6, 7, b"abc"))
    assert struct.unpack("<II", ram.read(HEADER + WRITE_INDEX, 8)) == (24, 0)
    assert struct.unpack("<HHHHQ", ram.read(DATA, 16)) == (6, 2, 3, 0, 7)
    assert ram.read(DATA + 16, 8) == b"abc\0\0\0\0\0"


def test_a_packet_wraps_around_the_end_of_the_data_area(ram: GuestRam) -> None:
    r = ring(ram)
    size = 4096 - 16 - 64                   # leaves 64 bytes before the end
    r.write_packet(packet(1, size))
    assert r.read_packet() is not None
    assert r.read_index() == r.write_index() == 4096 - 64
    wrapping = Packet(PACKET_DATA_INBAND, 9, bytes(range(200)))
    r.write_packet(wrapping)
    assert r.write_index() == (4096 - 64 + 216) % 4096 == 152
    assert ram.read(DATA + 4096 - 64, 64) + ram.read(DATA, 152) == wrapping.encode()
    got = r.read_packet()
    assert got is not None and got.payload[:200] == bytes(range(200)) and got.transaction_id == 9


def test_wrapping_across_non_contiguous_data_pages(ram: GuestRam) -> None:
    r = ring(ram, data_pages=3)
    assert r.data_size == 3 * 4096
    for round in range(20):                 # 20 x 1 KiB packets go round a 12 KiB ring
        payload = bytes((round + i) & 0xFF for i in range(1000))
        r.write_packet(Packet(PACKET_DATA_INBAND, round, payload))
        got = r.read_packet()
        assert got is not None and got.payload[:1000] == payload


def test_a_full_ring_keeps_one_unit_free(ram: GuestRam) -> None:
    """4096 bytes of data: 127 packets of 32 bytes fit (4064), the 128th would make write
    catch read up (full would look empty), so it is refused; after one read it fits."""
    r = ring(ram)
    for n in range(127):
        r.write_packet(packet(n & 0xFF, 16))
    assert r.free_bytes() == 31
    with pytest.raises(VmbusError) as refused:
        r.write_packet(packet(0, 16))
    assert refused.value.status is HvStatus.INSUFFICIENT_BUFFERS
    assert not r.is_empty() and r.used_bytes() == 4064
    r.read_packet()
    r.write_packet(packet(0xEE, 16))
    assert r.used_bytes() == 4064 and r.write_index() == 0


def test_exactly_filling_all_but_the_last_unit_is_allowed(ram: GuestRam) -> None:
    r = ring(ram)
    r.write_packet(packet(1, 4096 - 16 - 8))      # 4088 bytes: 8 left free
    assert r.free_bytes() == 7 and r.write_index() == 4088
    with pytest.raises(VmbusError):
        r.write_packet(Packet(PACKET_DATA_INBAND, 0, b""))   # 16 more bytes do not fit


def test_only_the_empty_to_non_empty_transition_interrupts(ram: GuestRam) -> None:
    r = ring(ram)
    assert [r.write_packet(packet(n)) for n in range(3)] == [True, False, False]
    while r.read_packet() is not None:
        pass
    assert r.write_packet(packet(4)) is True
    assert r.interrupts == 2


def test_the_readers_interrupt_mask_suppresses_interrupts(ram: GuestRam) -> None:
    r = ring(ram)
    r.set_interrupt_mask(True)
    assert ram.read(HEADER + INTERRUPT_MASK, 4) == b"\1\0\0\0"
    assert r.write_packet(packet(1)) is False
    r.read_packet()
    r.set_interrupt_mask(False)
    assert r.write_packet(packet(2)) is True
    assert r.interrupts == 1


@pytest.mark.parametrize("pages, status", [
    ([HEADER + 8, DATA], HvStatus.INVALID_ALIGNMENT),
    ([HEADER, DATA + 1], HvStatus.INVALID_ALIGNMENT),
    ([HEADER, RAM], HvStatus.INVALID_PARAMETER),               # just past the end of RAM
    ([HEADER, 0xA0000], HvStatus.INVALID_PARAMETER),           # the legacy hole
    ([HEADER, layout.ROM_GPA], HvStatus.INVALID_PARAMETER),    # firmware ROM
    ([1 << 52, DATA], HvStatus.INVALID_PARAMETER),
    ([HEADER], HvStatus.INVALID_PARAMETER),                    # no data page
    ([HEADER, DATA, DATA], HvStatus.INVALID_PARAMETER),        # a page twice
])
def test_bad_gpas_are_refused_with_a_status(ram: GuestRam, pages: list[int],
                                            status: HvStatus) -> None:
    with pytest.raises(VmbusError) as refused:
        Ring(ram, pages)
    assert refused.value.status is status


@pytest.mark.parametrize("field, value", [(READ_INDEX, 4096), (WRITE_INDEX, 4), (READ_INDEX, 1 << 31)])
def test_corrupt_indices_are_a_status_not_a_crash(ram: GuestRam, field: int, value: int) -> None:
    r = ring(ram)
    ram.write(HEADER + field, struct.pack("<I", value))
    with pytest.raises(VmbusError) as refused:
        r.read_packet()
    assert refused.value.status is HvStatus.INVALID_PARAMETER
    with pytest.raises(VmbusError):
        r.write_packet(packet(1))


@pytest.mark.parametrize("descriptor", [
    struct.pack("<HHHHQ", 6, 2, 100, 0, 0),     # longer than what is in the ring
    struct.pack("<HHHHQ", 6, 1, 2, 0, 0),       # header shorter than a descriptor
    struct.pack("<HHHHQ", 6, 3, 2, 0, 0),       # header longer than the packet
])
def test_corrupt_descriptors_are_a_status_not_a_crash(ram: GuestRam, descriptor: bytes) -> None:
    r = ring(ram)
    ram.write(DATA, descriptor)
    ram.write(HEADER + WRITE_INDEX, struct.pack("<I", 16))
    with pytest.raises(VmbusError) as refused:
        r.read_packet()
    assert refused.value.status is HvStatus.INVALID_PARAMETER
