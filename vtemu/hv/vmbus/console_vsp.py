"""The synthetic console's host end: text packets from the guest onto COM1's output stream.

A request is an in-band packet whose payload is a byte count (u32), 4 reserved bytes, and
that many bytes of text (at most MAX_TEXT); the VSP hands the text to the same output the
16550 at 3F8h writes to, so a guest's lines come out in order whichever way it prints them.
A packet with the completion-requested flag gets a completion holding the count printed;
a count beyond the packet is clipped to the packet (the guest cannot make the host read
beyond what it wrote into the ring).
"""

from __future__ import annotations

import struct
from typing import Callable

from vtemu.hv.vmbus.channel import DeviceClass
from vtemu.hv.vmbus.ring import (DESCRIPTOR_SIZE, FLAG_COMPLETION_REQUESTED, PACKET_COMPLETION,
                                 Packet)

TEXT_HEADER = struct.Struct("<I4x")
COMPLETION = struct.Struct("<II")
MAX_TEXT = 4096


class ConsoleVsp:
    device_class = DeviceClass.CONSOLE
    max_response = DESCRIPTOR_SIZE + COMPLETION.size

    def __init__(self, output: Callable[[bytes], None]) -> None:
        self._output = output
        self.bytes_written = 0

    def handle(self, packet: Packet) -> Packet | None:
        text = self._text(packet.payload)
        if text:
            self._output(text)
            self.bytes_written += len(text)
        if not packet.flags & FLAG_COMPLETION_REQUESTED:
            return None
        return Packet(PACKET_COMPLETION, packet.transaction_id, COMPLETION.pack(len(text), 0))

    @staticmethod
    def _text(payload: bytes) -> bytes:
        if len(payload) < TEXT_HEADER.size:
            return b""
        (count,) = TEXT_HEADER.unpack_from(payload)
        return payload[TEXT_HEADER.size:TEXT_HEADER.size + min(count, MAX_TEXT)]
