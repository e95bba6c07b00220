"""The VMBus-like channel host: contact, offers, open and close, and serving a channel.

The guest talks to the host in two ways, as an enlightened Hyper-V guest does:

* Channel messages, guest -> host, by HvCallPostMessage (TLFS 11.10.1; input: connection id,
  message type, payload size, payload of at most 240 bytes) on connection 1 with message
  type 1, as VMBus posts them. The payload starts with the channel message type (u32, VMBus's
  numbers) and a reserved u32. Host -> guest messages (Hyper-V delivers them through the
  SynIC message page; vtemu has no SynIC) are in-band packets in a *message ring*: a ring
  (ring.py) whose pages the guest names at contact, with the interrupt vector it wants for
  it. The host handles a message while the guest's hypercall is in progress, so anything
  wrong with it comes back as the hypercall's status and nothing is half done.
* Channel events, guest -> host, by HvCallSignalEvent (TLFS 11.10.2; input: connection id,
  flag number) on the connection id of an open channel: "there are packets in my outbound
  ring". The host drains that ring, handing each packet to the device's VSP and putting the
  VSP's responses into the inbound ring, then returns. The host never sets the interrupt mask
  of the outbound ring (it is never busy when the guest looks), so the guest signals once
  per batch: when its batch starts in an empty ring.

Messages (body layouts after the 8-byte message header; all little-endian):

    INITIATE_CONTACT (14)    version u32, vector u32, page count u32, rsvd u32, page GPAs u64[]
                             -> VERSION_RESPONSE (15): supported u32 (1/0), version u32
    REQUEST_OFFERS (3)       -> OFFER_CHANNEL (1) per device: class u32, relid u32,
                                connection id u32, rsvd u32; then ALL_OFFERS_DELIVERED (4)
    OPEN_CHANNEL (5)         relid u32, vector u32, outbound pages u32, page count u32,
                             page GPAs u64[]: the first `outbound pages` are the guest -> host
                             ring (header page first), the rest the host -> guest ring
                             -> OPEN_CHANNEL_RESULT (6): relid u32, status u32 (0)
    CLOSE_CHANNEL (7)        relid u32 (no answer; the channel's connection id stops working)

Statuses: a message on another connection id or before contact, INVALID_CONNECTION_ID /
INVALID_PARTITION_STATE; a payload over 240 bytes or a bad field, INVALID_PARAMETER; a page
GPA that is misaligned, INVALID_ALIGNMENT, or not this partition's RAM, INVALID_PARAMETER;
no room in the message ring for the answer, INSUFFICIENT_BUFFERS; a signal on a connection
id that is no open channel's, INVALID_CONNECTION_ID, or with a flag number other than 0 (each
channel has one event flag), INVALID_PARAMETER. A channel whose outbound
ring turns out corrupt (indices or a descriptor the guest broke) is closed by the host and
the SignalEvent returns INVALID_PARAMETER.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Callable, Protocol

from vtemu.hv.vmbus.errors import HvStatus, VmbusError
from vtemu.hv.vmbus.memory import GuestMemory
from vtemu.hv.vmbus.ring import PACKET_DATA_INBAND, Packet, Ring

MESSAGE_CONNECTION_ID = 1          # VMBus's message connection
MESSAGE_TYPE_CHANNEL = 1           # the HV_MESSAGE_TYPE VMBus posts its messages with
MAX_MESSAGE_PAYLOAD = 240          # TLFS HV_MESSAGE_PAYLOAD_BYTE_COUNT
CHANNEL_CONNECTION_BASE = 0x10     # channel relid r signals on connection id 10h + r
VERSION = 1                        # the one protocol version this host speaks
FIRST_VECTOR = 0x20                # vectors 0-1Fh are exceptions
MESSAGE_HEADER = struct.Struct("<II")
MAX_PAGES_IN_MESSAGE = (MAX_MESSAGE_PAYLOAD - MESSAGE_HEADER.size - 16) // 8   # 27


class ChannelMessage(IntEnum):
    OFFER_CHANNEL = 1
    REQUEST_OFFERS = 3
    ALL_OFFERS_DELIVERED = 4
    OPEN_CHANNEL = 5
    OPEN_CHANNEL_RESULT = 6
    CLOSE_CHANNEL = 7
    INITIATE_CONTACT = 14
    VERSION_RESPONSE = 15


class DeviceClass(IntEnum):
    """vtemu's own device class numbers (VMBus names classes by GUID)."""

    STORAGE = 1
    CONSOLE = 2


class Vsp(Protocol):
    """A device's host end: one request packet in, at most one response packet out."""

    device_class: DeviceClass
    max_response: int              # bytes the largest response takes in a ring

    def handle(self, packet: Packet) -> Packet | None: ...


def invalid(reason: str) -> VmbusError:
    return VmbusError(HvStatus.INVALID_PARAMETER, reason)


@dataclass
class Channel:
    relid: int
    vsp: Vsp
    outbound: Ring | None = None   # guest -> host
    inbound: Ring | None = None    # host -> guest
    vector: int = 0
    packets: int = 0               # requests handled

    @property
    def connection_id(self) -> int:
        return CHANNEL_CONNECTION_BASE + self.relid

    @property
    def is_open(self) -> bool:
        return self.outbound is not None


@dataclass
class ChannelStats:
    messages: int = 0
    signals: int = 0
    interrupts: int = 0


class VmbusHost:
    """The root partition's side of every channel of one child partition."""

    def __init__(self, memory: GuestMemory, interrupt: Callable[[int], None],
                 devices: list[Vsp]) -> None:
        self.memory = memory
        self._interrupt = interrupt
        self.channels = {relid: Channel(relid, vsp) for relid, vsp in enumerate(devices, 1)}
        self.message_ring: Ring | None = None
        self.message_vector = 0
        self.stats = ChannelStats()
        self.log: list[str] = []          # why channels were closed by the host

    # --- HvCallPostMessage -----------------------------------------------------------------
    def post_message(self, connection_id: int, message_type: int, payload: bytes) -> HvStatus:
        """Handle one posted message; the status is the hypercall's result."""
        try:
            self._post_message(connection_id, message_type, payload)
        except VmbusError as error:
            return error.status
        self.stats.messages += 1
        return HvStatus.SUCCESS

    def _post_message(self, connection_id: int, message_type: int, payload: bytes) -> None:
        if connection_id != MESSAGE_CONNECTION_ID:
            raise VmbusError(HvStatus.INVALID_CONNECTION_ID, f"no port at {connection_id:#x}")
        if len(payload) > MAX_MESSAGE_PAYLOAD or message_type != MESSAGE_TYPE_CHANNEL:
            raise invalid("message type or size")
        if len(payload) < MESSAGE_HEADER.size:
            raise invalid("message shorter than its header")
        kind, _ = MESSAGE_HEADER.unpack_from(payload)
        body = payload[MESSAGE_HEADER.size:]
        if kind == ChannelMessage.INITIATE_CONTACT:
            self._initiate_contact(body)
            return
        if self.message_ring is None:
            raise VmbusError(HvStatus.INVALID_PARTITION_STATE, "no contact yet")
        handlers: dict[int, Callable[[bytes], None]] = {
            ChannelMessage.REQUEST_OFFERS: self._request_offers,
            ChannelMessage.OPEN_CHANNEL: self._open_channel,
            ChannelMessage.CLOSE_CHANNEL: self._close_channel}
        handler = handlers.get(kind)
        if handler is None:
            raise invalid(f"unknown channel message {kind}")
        handler(body)

    def _initiate_contact(self, body: bytes) -> None:
        version, vector, count = _fields(body, "<III4x")
        if self.message_ring is not None:
            raise VmbusError(HvStatus.INVALID_PARTITION_STATE, "contact already made")
        ring = Ring(self.memory, _page_list(body, 16, count))
        vector = _checked_vector(vector)
        self.message_ring, self.message_vector = ring, vector
        agreed = False
        try:
            self._send_message(ChannelMessage.VERSION_RESPONSE,
                               struct.pack("<II", int(version == VERSION), VERSION))
            agreed = version == VERSION
        finally:
            if not agreed:
                self.message_ring = None     # no contact; the guest may try again

    def _request_offers(self, body: bytes) -> None:
        replies = [(ChannelMessage.OFFER_CHANNEL,
                    struct.pack("<IIII", channel.vsp.device_class, relid, channel.connection_id, 0))
                   for relid, channel in self.channels.items()]
        replies.append((ChannelMessage.ALL_OFFERS_DELIVERED, b""))
        self._send_messages(replies)

    def _open_channel(self, body: bytes) -> None:
        relid, vector, outbound_pages, count = _fields(body, "<IIII")
        channel = self._channel(relid)
        if channel.is_open:
            raise VmbusError(HvStatus.INVALID_PARTITION_STATE, f"channel {relid} is open")
        pages = _page_list(body, 16, count)
        if len(set(pages)) != count:
            raise invalid("a page appears twice in the channel's rings")
        if not 2 <= outbound_pages <= count - 2:
            raise invalid(f"{outbound_pages} outbound pages of {count}")
        vector = _checked_vector(vector)
        outbound = Ring(self.memory, pages[:outbound_pages])
        inbound = Ring(self.memory, pages[outbound_pages:])
        self._send_message(ChannelMessage.OPEN_CHANNEL_RESULT, struct.pack("<II", relid, 0))
        channel.outbound, channel.inbound, channel.vector = outbound, inbound, vector

    def _close_channel(self, body: bytes) -> None:
        (relid,) = _fields(body, "<I")
        channel = self._channel(relid)
        if not channel.is_open:
            raise VmbusError(HvStatus.INVALID_PARTITION_STATE, f"channel {relid} is not open")
        channel.outbound = channel.inbound = None

    def _channel(self, relid: int) -> Channel:
        channel = self.channels.get(relid)
        if channel is None:
            raise invalid(f"no channel {relid}")
        return channel

    def _send_message(self, kind: ChannelMessage, body: bytes) -> None:
        self._send_messages([(kind, body)])

    def _send_messages(self, messages: list[tuple[ChannelMessage, bytes]]) -> None:
        """All or nothing: the answers must fit the message ring together."""
        ring = self.message_ring
        assert ring is not None
        packets = [Packet(PACKET_DATA_INBAND, 0, MESSAGE_HEADER.pack(kind, 0) + body)
                   for kind, body in messages]
        if not ring.has_room(sum(packet.size for packet in packets)):
            raise VmbusError(HvStatus.INSUFFICIENT_BUFFERS, "message ring full")
        for packet in packets:
            self._deliver(ring, packet, self.message_vector)

    def _deliver(self, ring: Ring, packet: Packet, vector: int) -> None:
        if ring.write_packet(packet):
            self.stats.interrupts += 1
            self._interrupt(vector)

    # --- HvCallSignalEvent -----------------------------------------------------------------
    def signal_event(self, connection_id: int, flag_number: int) -> HvStatus:
        channel = self._open_channel_at(connection_id)
        if channel is None:
            return HvStatus.INVALID_CONNECTION_ID
        if flag_number != 0:
            return HvStatus.INVALID_PARAMETER
        self.stats.signals += 1
        try:
            self._serve(channel)
        except VmbusError as error:
            self.log.append(f"channel {channel.relid} closed: {error.reason}")
            channel.outbound = channel.inbound = None
            return error.status
        return HvStatus.SUCCESS

    def _open_channel_at(self, connection_id: int) -> Channel | None:
        relid = connection_id - CHANNEL_CONNECTION_BASE
        channel = self.channels.get(relid)
        return channel if channel is not None and channel.is_open else None

    def _serve(self, channel: Channel) -> None:
        """Drain what the outbound ring held at the signal while the inbound one has room
        for an answer (a VSP whose answers cannot go out stops taking requests: the guest
        must read first). Only what was there at the signal: were the guest to alias its
        rings, the answers would otherwise feed the loop for ever."""
        outbound, inbound = channel.outbound, channel.inbound
        assert outbound is not None and inbound is not None
        budget = outbound.used_bytes()
        while budget > 0 and inbound.has_room(channel.vsp.max_response):
            found = outbound.read_packet_sized()
            if found is None:
                return
            request, size = found
            budget -= size
            channel.packets += 1
            response = channel.vsp.handle(request)
            if response is not None:
                self._deliver(inbound, response, channel.vector)


def _fields(body: bytes, layout: str) -> tuple[int, ...]:
    shape = struct.Struct(layout)
    if len(body) < shape.size:
        raise invalid("message body too short")
    return shape.unpack_from(body)


def _page_list(body: bytes, offset: int, count: int) -> list[int]:
    if not 0 < count <= MAX_PAGES_IN_MESSAGE or len(body) < offset + 8 * count:
        raise invalid(f"page list of {count} entries does not fit the message")
    return list(struct.unpack_from(f"<{count}Q", body, offset))


def _checked_vector(vector: int) -> int:
    if not FIRST_VECTOR <= vector <= 0xFF:
        raise invalid(f"interrupt vector {vector:#x}")
    return vector
