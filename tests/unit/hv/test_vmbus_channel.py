"""The channel host driven by a guest side written in Python (the guest's VSC), over a real
partition's RAM and a real disk image file."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable

import pytest

from vtemu.devices.ata_disk import DiskImage
from vtemu.hv.memory import PartitionMemory, create_rom
from vtemu.hv.vmbus.channel import (CHANNEL_CONNECTION_BASE, MESSAGE_CONNECTION_ID,
                                    MESSAGE_TYPE_CHANNEL, ChannelMessage, DeviceClass, VmbusHost)
from vtemu.hv.vmbus.console_vsp import ConsoleVsp
from vtemu.hv.vmbus.errors import HvStatus
from vtemu.hv.vmbus.memory import GuestRam
from vtemu.hv.vmbus.ring import (FLAG_COMPLETION_REQUESTED, PACKET_COMPLETION,
                                 PACKET_DATA_INBAND, READ_INDEX, Packet, Ring)
from vtemu.hv.vmbus.storage_vsp import COMPLETION, REQUEST, Operation, StorageStatus, StorageVsp
from vtemu.machine import layout
from vtemu.machine.memory import HostMemory

RAM = 16 << 20
SECTORS = 64
MESSAGE_RING = [0x100000, 0x101000]
STORAGE_PAGES = [0x110000, 0x111000, 0x112000, 0x113000]     # 2 pages out, 2 pages in
CONSOLE_PAGES = [0x120000, 0x121000, 0x122000, 0x123000]
BUFFER = 0x200000
MESSAGE_VECTOR, STORAGE_VECTOR, CONSOLE_VECTOR = 0x50, 0x51, 0x52


def sector_bytes(lba: int) -> bytes:
    return bytes((lba * 7 + i) & 0xFF for i in range(512))


class Guest:
    """The guest's side: posts messages, reads the message ring, drives channels."""

    def __init__(self, tmp_path: Path, read_only: Callable[[int], bool] = lambda gpa: False) -> None:
        host = HostMemory()
        rom = create_rom(host, bytes(layout.ROM_SIZE))
        self.ram = GuestRam(PartitionMemory(0, RAM, host, rom), read_only=read_only)
        path = tmp_path / "disk.img"
        path.write_bytes(b"".join(sector_bytes(lba) for lba in range(SECTORS)))
        self.image_path = path
        self.disk = DiskImage.open(path)
        self.output = bytearray()
        self.interrupts: list[int] = []
        self.storage = StorageVsp(self.ram, self.disk)
        self.host = VmbusHost(self.ram, self.interrupts.append,
                              [self.storage, ConsoleVsp(self.output.extend)])
        self.messages = Ring(self.ram, MESSAGE_RING)

    def post(self, kind: int, body: bytes = b"", connection: int = MESSAGE_CONNECTION_ID,
             message_type: int = MESSAGE_TYPE_CHANNEL) -> HvStatus:
        return self.host.post_message(connection, message_type, struct.pack("<II", kind, 0) + body)

    def received(self) -> list[tuple[int, bytes]]:
        out = []
        while (packet := self.messages.read_packet()) is not None:
            kind, _ = struct.unpack_from("<II", packet.payload)
            out.append((kind, packet.payload[8:]))
        return out

    def contact(self, version: int = 1) -> HvStatus:
        return self.post(ChannelMessage.INITIATE_CONTACT,
                         struct.pack("<IIII", version, MESSAGE_VECTOR, len(MESSAGE_RING), 0)
                         + struct.pack(f"<{len(MESSAGE_RING)}Q", *MESSAGE_RING))

    def open(self, relid: int, pages: list[int], vector: int, outbound: int = 2) -> HvStatus:
        return self.post(ChannelMessage.OPEN_CHANNEL,
                         struct.pack("<IIII", relid, vector, outbound, len(pages))
                         + struct.pack(f"<{len(pages)}Q", *pages))

    def connected(self) -> "Guest":
        assert self.contact() is HvStatus.SUCCESS
        assert self.post(ChannelMessage.REQUEST_OFFERS) is HvStatus.SUCCESS
        assert self.open(1, STORAGE_PAGES, STORAGE_VECTOR) is HvStatus.SUCCESS
        assert self.open(2, CONSOLE_PAGES, CONSOLE_VECTOR) is HvStatus.SUCCESS
        self.received()
        self.interrupts.clear()
        return self


@pytest.fixture
def guest(tmp_path: Path) -> Guest:
    return Guest(tmp_path)


def storage_request(operation: int, lba: int, sectors: int, buffer: int = BUFFER,
                    pages: int | None = None) -> bytes:
    count = pages if pages is not None else -(-(buffer % 4096 + sectors * 512) // 4096)
    frames = [(buffer >> 12) + i for i in range(count)]
    return REQUEST.pack(operation, sectors, lba, buffer % 4096, count) + \
        struct.pack(f"<{count}Q", *frames)


def outbound(pages: list[int], guest: Guest) -> Ring:
    return Ring(guest.ram, pages[:2])


def inbound(pages: list[int], guest: Guest) -> Ring:
    return Ring(guest.ram, pages[2:])


def completions(ring: Ring) -> list[tuple[int, int, int, int]]:
    out = []
    while (packet := ring.read_packet()) is not None:
        assert packet.type == PACKET_COMPLETION
        out.append((packet.transaction_id, *COMPLETION.unpack_from(packet.payload)))
    return out


# --- contact and offers ------------------------------------------------------------------------


def test_contact_answers_with_the_version_and_interrupts_on_the_chosen_vector(guest: Guest) -> None:
    assert guest.contact() is HvStatus.SUCCESS
    assert guest.received() == [(ChannelMessage.VERSION_RESPONSE, struct.pack("<II", 1, 1))]
    assert guest.interrupts == [MESSAGE_VECTOR]


def test_an_unknown_version_is_refused_and_contact_can_be_retried(guest: Guest) -> None:
    assert guest.contact(version=7) is HvStatus.SUCCESS
    assert guest.received() == [(ChannelMessage.VERSION_RESPONSE, struct.pack("<II", 0, 1))]
    assert guest.post(ChannelMessage.REQUEST_OFFERS) is HvStatus.INVALID_PARTITION_STATE
    assert guest.contact() is HvStatus.SUCCESS


def test_offers_arrive_in_one_batch_with_one_interrupt(guest: Guest) -> None:
    guest.contact()
    guest.received()
    guest.interrupts.clear()
    assert guest.post(ChannelMessage.REQUEST_OFFERS) is HvStatus.SUCCESS
    offers = guest.received()
    assert offers == [
        (ChannelMessage.OFFER_CHANNEL, struct.pack("<IIII", DeviceClass.STORAGE, 1,
                                                   CHANNEL_CONNECTION_BASE + 1, 0)),
        (ChannelMessage.OFFER_CHANNEL, struct.pack("<IIII", DeviceClass.CONSOLE, 2,
                                                   CHANNEL_CONNECTION_BASE + 2, 0)),
        (ChannelMessage.ALL_OFFERS_DELIVERED, b"")]
    assert guest.interrupts == [MESSAGE_VECTOR]


def test_messages_before_contact_or_to_another_port(guest: Guest) -> None:
    assert guest.post(ChannelMessage.REQUEST_OFFERS) is HvStatus.INVALID_PARTITION_STATE
    assert guest.post(ChannelMessage.REQUEST_OFFERS, connection=2) is HvStatus.INVALID_CONNECTION_ID
    guest.contact()
    assert guest.post(ChannelMessage.REQUEST_OFFERS, message_type=2) is HvStatus.INVALID_PARAMETER
    assert guest.post(99) is HvStatus.INVALID_PARAMETER
    assert guest.post(ChannelMessage.OPEN_CHANNEL, b"\0" * 233) is HvStatus.INVALID_PARAMETER
    assert guest.host.post_message(MESSAGE_CONNECTION_ID, MESSAGE_TYPE_CHANNEL, b"\3") \
        is HvStatus.INVALID_PARAMETER
    assert guest.contact() is HvStatus.INVALID_PARTITION_STATE


@pytest.mark.parametrize("pages, status", [
    ([0x110008, 0x111000, 0x112000, 0x113000], HvStatus.INVALID_ALIGNMENT),
    ([0x110000, 0x111000, 0x112000, RAM], HvStatus.INVALID_PARAMETER),
    ([0x110000, 0x111000, 0xB8000, 0x113000], HvStatus.INVALID_PARAMETER),
    ([0x110000, 0x111000, 0x112000], HvStatus.INVALID_PARAMETER),      # no room for 2 + 2
])
def test_open_validates_every_gpa(guest: Guest, pages: list[int], status: HvStatus) -> None:
    guest.contact()
    guest.received()
    assert guest.open(1, pages, STORAGE_VECTOR) is status
    assert guest.received() == []
    assert guest.host.signal_event(CHANNEL_CONNECTION_BASE + 1, 0) is HvStatus.INVALID_CONNECTION_ID


def test_open_validates_the_channel_and_vector(guest: Guest) -> None:
    guest.contact()
    assert guest.open(9, STORAGE_PAGES, STORAGE_VECTOR) is HvStatus.INVALID_PARAMETER
    assert guest.open(1, STORAGE_PAGES, 0x0E) is HvStatus.INVALID_PARAMETER
    assert guest.open(1, STORAGE_PAGES, STORAGE_VECTOR) is HvStatus.SUCCESS
    assert guest.received()[-1] == (ChannelMessage.OPEN_CHANNEL_RESULT, struct.pack("<II", 1, 0))
    assert guest.open(1, STORAGE_PAGES, STORAGE_VECTOR) is HvStatus.INVALID_PARTITION_STATE


def test_a_full_message_ring_refuses_the_message(guest: Guest) -> None:
    """Offers are 104 bytes of answers: the 4 KiB message ring takes 39 rounds, and the
    40th is refused whole (no partial set of offers)."""
    guest.contact()
    guest.received()
    statuses = [guest.post(ChannelMessage.REQUEST_OFFERS) for _ in range(40)]
    assert statuses == [HvStatus.SUCCESS] * 39 + [HvStatus.INSUFFICIENT_BUFFERS]
    assert len(guest.received()) == 39 * 3
    assert guest.post(ChannelMessage.REQUEST_OFFERS) is HvStatus.SUCCESS


def test_close_ends_the_channel(guest: Guest) -> None:
    guest.connected()
    assert guest.post(ChannelMessage.CLOSE_CHANNEL, struct.pack("<I", 2)) is HvStatus.SUCCESS
    assert guest.host.signal_event(CHANNEL_CONNECTION_BASE + 2, 0) is HvStatus.INVALID_CONNECTION_ID
    assert guest.post(ChannelMessage.CLOSE_CHANNEL, struct.pack("<I", 2)) \
        is HvStatus.INVALID_PARTITION_STATE
    assert guest.host.signal_event(CHANNEL_CONNECTION_BASE + 1, 0) is HvStatus.SUCCESS
    assert guest.host.signal_event(CHANNEL_CONNECTION_BASE + 1, 1) is HvStatus.INVALID_PARAMETER


# --- storage -----------------------------------------------------------------------------------


def test_a_batch_of_requests_one_signal_one_interrupt(guest: Guest) -> None:
    guest.connected()
    out, into = outbound(STORAGE_PAGES, guest), inbound(STORAGE_PAGES, guest)
    for n in range(8):                     # 8 sectors each, 8 requests: LBA 0-63
        out.write_packet(Packet(PACKET_DATA_INBAND, 100 + n,
                                storage_request(Operation.READ, 8 * n, 8, BUFFER + 4096 * n),
                                FLAG_COMPLETION_REQUESTED))
    assert guest.host.signal_event(CHANNEL_CONNECTION_BASE + 1, 0) is HvStatus.SUCCESS
    assert completions(into) == [(100 + n, StorageStatus.OK, 8, 0) for n in range(8)]
    assert guest.interrupts == [STORAGE_VECTOR]
    assert guest.ram.read(BUFFER, SECTORS * 512) == b"".join(map(sector_bytes, range(SECTORS)))
    assert guest.host.stats.signals == 1 and guest.storage.sectors_read == SECTORS


def test_writes_reach_the_image_file(guest: Guest) -> None:
    guest.connected()
    out, into = outbound(STORAGE_PAGES, guest), inbound(STORAGE_PAGES, guest)
    data = bytes(range(256)) * 6                             # 3 sectors, across a page boundary
    guest.ram.write(BUFFER + 3000, data)
    out.write_packet(Packet(PACKET_DATA_INBAND, 1, storage_request(Operation.WRITE, 10, 3,
                                                                   BUFFER + 3000)))
    out.write_packet(Packet(PACKET_DATA_INBAND, 2, storage_request(Operation.FLUSH, 0, 0)))
    guest.host.signal_event(CHANNEL_CONNECTION_BASE + 1, 0)
    assert completions(into) == [(1, StorageStatus.OK, 3, 0), (2, StorageStatus.OK, 0, 0)]
    image = guest.image_path.read_bytes()
    assert image[10 * 512:13 * 512] == data
    assert image[:10 * 512] == b"".join(map(sector_bytes, range(10)))


def test_capacity_and_the_end_of_the_disk(guest: Guest) -> None:
    guest.connected()
    out, into = outbound(STORAGE_PAGES, guest), inbound(STORAGE_PAGES, guest)
    for tid, request in enumerate([storage_request(Operation.QUERY_CAPACITY, 0, 0),
                                   storage_request(Operation.READ, SECTORS, 1),
                                   storage_request(Operation.READ, SECTORS - 1, 2),
                                   storage_request(Operation.WRITE, SECTORS + 5, 1),
                                   storage_request(77, 0, 1)]):
        out.write_packet(Packet(PACKET_DATA_INBAND, tid, request))
    guest.host.signal_event(CHANNEL_CONNECTION_BASE + 1, 0)
    assert completions(into) == [(0, StorageStatus.OK, 0, SECTORS),
                                 (1, StorageStatus.OUT_OF_RANGE, 0, 0),
                                 (2, StorageStatus.OUT_OF_RANGE, 1, 0),
                                 (3, StorageStatus.OUT_OF_RANGE, 0, 0),
                                 (4, StorageStatus.BAD_REQUEST, 0, 0)]
    assert guest.ram.read(BUFFER, 512) == sector_bytes(SECTORS - 1)
    assert guest.image_path.stat().st_size == SECTORS * 512


@pytest.mark.parametrize("request_bytes", [
    storage_request(Operation.READ, 0, 1, buffer=RAM - 4096, pages=2),    # runs off RAM
    storage_request(Operation.READ, 0, 1, buffer=0xA0000),                # the legacy hole
    storage_request(Operation.READ, 0, 9, pages=1),                       # buffer too short
    storage_request(Operation.WRITE, 0, 1, buffer=layout.ROM_GPA),        # ROM
    REQUEST.pack(Operation.READ, 1, 0, 0, 3) + struct.pack("<Q", BUFFER >> 12),   # list cut short
])
def test_bad_buffers_move_nothing(guest: Guest, request_bytes: bytes) -> None:
    guest.connected()
    out, into = outbound(STORAGE_PAGES, guest), inbound(STORAGE_PAGES, guest)
    before = guest.image_path.read_bytes()
    out.write_packet(Packet(PACKET_DATA_INBAND, 5, request_bytes))
    assert guest.host.signal_event(CHANNEL_CONNECTION_BASE + 1, 0) is HvStatus.SUCCESS
    assert completions(into) == [(5, StorageStatus.BAD_BUFFER, 0, 0)]
    assert guest.image_path.read_bytes() == before
    assert guest.storage.sectors_read == 0


def test_a_full_inbound_ring_holds_requests_back_until_the_guest_reads(guest: Guest) -> None:
    """The inbound ring (4 KiB) takes 127 completions of 32 bytes; the rest wait in the
    outbound ring and are served at the next signal."""
    guest.connected()
    out = Ring(guest.ram, [0x300000, 0x301000, 0x302000, 0x303000])      # 8 KiB outbound
    into = inbound(STORAGE_PAGES, guest)
    guest.host.channels[1].outbound = out
    for n in range(150):
        out.write_packet(Packet(PACKET_DATA_INBAND, n, storage_request(Operation.QUERY_CAPACITY, 0, 0)))
    guest.host.signal_event(CHANNEL_CONNECTION_BASE + 1, 0)
    first = completions(into)
    assert len(first) == 127 and not out.is_empty()
    guest.host.signal_event(CHANNEL_CONNECTION_BASE + 1, 0)
    assert [c[0] for c in first + completions(into)] == list(range(150))


def test_a_corrupt_ring_closes_the_channel(guest: Guest) -> None:
    guest.connected()
    guest.ram.write(STORAGE_PAGES[0] + READ_INDEX, struct.pack("<I", 12345))
    assert guest.host.signal_event(CHANNEL_CONNECTION_BASE + 1, 0) is HvStatus.INVALID_PARAMETER
    assert guest.host.signal_event(CHANNEL_CONNECTION_BASE + 1, 0) is HvStatus.INVALID_CONNECTION_ID
    assert "channel 1 closed" in guest.host.log[0]


# --- console -----------------------------------------------------------------------------------


def test_console_text_reaches_the_output_and_completes_when_asked(guest: Guest) -> None:
    guest.connected()
    out, into = outbound(CONSOLE_PAGES, guest), inbound(CONSOLE_PAGES, guest)
    out.write_packet(Packet(PACKET_DATA_INBAND, 1, struct.pack("<I4x", 6) + b"hello\n"))
    out.write_packet(Packet(PACKET_DATA_INBAND, 2, struct.pack("<I4x", 3) + b"ok\nIGNORED",
                            FLAG_COMPLETION_REQUESTED))
    out.write_packet(Packet(PACKET_DATA_INBAND, 3, struct.pack("<I4x", 1000) + b"clip"))
    guest.host.signal_event(CHANNEL_CONNECTION_BASE + 2, 0)
    assert bytes(guest.output) == b"hello\nok\nclip\0\0\0\0"    # clipped to the packet
    replies = []
    while (packet := into.read_packet()) is not None:
        replies.append((packet.transaction_id, struct.unpack_from("<I", packet.payload)[0]))
    assert replies == [(2, 3)]
    assert guest.interrupts == [CONSOLE_VECTOR]


def test_an_image_the_host_cannot_read_is_an_io_error(guest: Guest) -> None:
    guest.connected()
    out, into = outbound(STORAGE_PAGES, guest), inbound(STORAGE_PAGES, guest)
    guest.disk.close()
    out.write_packet(Packet(PACKET_DATA_INBAND, 3, storage_request(Operation.READ, 0, 1)))
    assert guest.host.signal_event(CHANNEL_CONNECTION_BASE + 1, 0) is HvStatus.SUCCESS
    assert completions(into) == [(3, StorageStatus.IO_ERROR, 0, 0)]


def test_pages_the_guest_may_not_write_are_refused(tmp_path: Path) -> None:
    protected = BUFFER + 0x1000
    guest = Guest(tmp_path, read_only=lambda gpa: gpa & ~0xFFF == protected).connected()
    out, into = outbound(STORAGE_PAGES, guest), inbound(STORAGE_PAGES, guest)
    out.write_packet(Packet(PACKET_DATA_INBAND, 1, storage_request(Operation.READ, 0, 16)))
    guest.host.signal_event(CHANNEL_CONNECTION_BASE + 1, 0)
    assert completions(into) == [(1, StorageStatus.BAD_BUFFER, 0, 0)]
    assert guest.ram.read(protected, 4096) == bytes(4096)


def test_rings_aliased_by_the_guest_cannot_loop_the_host(guest: Guest) -> None:
    """Channel 1's inbound ring is channel 2's outbound ring and the reverse: each signal
    serves only what was in the ring when it came."""
    guest.contact()
    shared = [0x130000, 0x131000, 0x140000, 0x141000]
    assert guest.open(1, shared, STORAGE_VECTOR) is HvStatus.SUCCESS
    assert guest.open(2, shared[2:] + shared[:2], CONSOLE_VECTOR) is HvStatus.SUCCESS
    out = Ring(guest.ram, shared[:2])
    for n in range(3):
        out.write_packet(Packet(PACKET_DATA_INBAND, n, storage_request(Operation.QUERY_CAPACITY, 0, 0)))
    assert guest.host.signal_event(CHANNEL_CONNECTION_BASE + 1, 0) is HvStatus.SUCCESS
    assert guest.host.channels[1].packets == 3
    assert guest.host.signal_event(CHANNEL_CONNECTION_BASE + 2, 0) is HvStatus.SUCCESS
    assert guest.host.channels[2].packets == 3


def test_a_page_twice_in_one_open_is_refused(guest: Guest) -> None:
    guest.contact()
    assert guest.open(1, [0x110000, 0x111000, 0x110000, 0x113000], STORAGE_VECTOR) \
        is HvStatus.INVALID_PARAMETER


def test_garbage_from_the_guest_only_ever_gets_statuses(guest: Guest) -> None:
    """Seeded random messages, ring headers and packets: every call returns an HV_STATUS,
    nothing raises, and the host stays usable."""
    import random
    rng = random.Random(5)
    guest.connected()
    kinds = [int(kind) for kind in ChannelMessage] + [0, 99, 0xFFFFFFFF]
    for _ in range(300):
        body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 240)))
        if rng.random() < 0.5:      # plausible GPAs in the page list positions
            body = body[:16] + struct.pack("<4Q", *(rng.choice([0x110000, 0x2000, RAM, 0xA0000,
                                                                 0x111008, 1 << 60])
                                                     for _ in range(4))) + body[48:]
        status = guest.post(rng.choice(kinds), body[:232])
        assert isinstance(status, HvStatus)
    for _ in range(200):
        page = rng.choice(STORAGE_PAGES + CONSOLE_PAGES)
        offset = rng.choice([0, 4, 8, rng.randrange(0, 4096 - 8) & ~7])
        guest.ram.write(page + offset, struct.pack("<Q", rng.getrandbits(64) & rng.choice(
            [0xFFF8, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF])))
        for relid in (1, 2):
            status = guest.host.signal_event(CHANNEL_CONNECTION_BASE + relid, rng.choice([0, 0, 1]))
            assert isinstance(status, HvStatus)
    assert guest.post(ChannelMessage.REQUEST_OFFERS) in (HvStatus.SUCCESS,
                                                          HvStatus.INSUFFICIENT_BUFFERS)
