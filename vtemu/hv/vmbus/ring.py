"""One VMBus-style ring buffer in guest memory, named by a list of page GPAs.

Shape (after VMBus's ring buffers; the offsets are vtemu's own):

    page 0 (header)   +0 write index (u32)   byte offset in the data area where the writer
                                              puts the next packet
                      +4 read index (u32)    byte offset of the next packet to read
                      +8 interrupt mask (u32) set by the READER: "do not interrupt me, I poll"
    pages 1..n-1      the data area, (n - 1) * 4096 bytes; the pages need not be contiguous
                      in guest-physical memory: the data area is their concatenation

Indices move forward modulo the data size. read == write means empty; the writer never lets
write catch up with read, so one byte (in practice one 8-byte unit, as packets are 8-byte
multiples) always stays free and a full ring is not mistaken for an empty one. A packet
may wrap around the end of the data area; its bytes continue at offset 0.

Packets (after VMBus's packet descriptor): a 16-byte descriptor -- type (u16), header length
in 8-byte units (u16, 2 here), total length in 8-byte units (u16), flags (u16), transaction
id (u64) -- then the payload, padded to a multiple of 8.

Interrupts: a writer that turns the ring from empty to non-empty interrupts the reader,
unless the reader has set the interrupt mask. Writers that add to a non-empty ring stay
quiet: the reader, still draining, will find the packet. This is what makes one interrupt
(or one hypercall, guest to host) cover a whole batch.

Everything in the header and every descriptor is guest-controlled: an index outside the
data area or not 8-byte aligned, or a descriptor whose lengths are impossible, is a
VmbusError (HV_STATUS_INVALID_PARAMETER), never an exception from the host's own code.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from vtemu.hv.vmbus.errors import HvStatus, VmbusError
from vtemu.hv.vmbus.memory import GuestMemory, page_runs
from vtemu.machine.addr import PAGE_SIZE

WRITE_INDEX = 0
READ_INDEX = 4
INTERRUPT_MASK = 8
PACKET_ALIGN = 8
DESCRIPTOR = struct.Struct("<HHHHQ")
DESCRIPTOR_SIZE = DESCRIPTOR.size      # 16
MAX_RING_PAGES = 64

# Packet types and flags (VMBus's values: in-band data, completion).
PACKET_DATA_INBAND = 6
PACKET_COMPLETION = 11
FLAG_COMPLETION_REQUESTED = 1


def padded(length: int) -> int:
    return (length + PACKET_ALIGN - 1) & -PACKET_ALIGN


@dataclass(frozen=True)
class Packet:
    type: int
    transaction_id: int
    payload: bytes
    flags: int = 0

    def encode(self) -> bytes:
        total = DESCRIPTOR_SIZE + padded(len(self.payload))
        header = DESCRIPTOR.pack(self.type, DESCRIPTOR_SIZE // PACKET_ALIGN, total // PACKET_ALIGN,
                                 self.flags, self.transaction_id)
        return (header + self.payload).ljust(total, b"\0")

    @property
    def size(self) -> int:
        return DESCRIPTOR_SIZE + padded(len(self.payload))


def corrupt(reason: str) -> VmbusError:
    return VmbusError(HvStatus.INVALID_PARAMETER, f"ring: {reason}")


class Ring:
    """Either end of one ring: the same object serves the writer and the reader."""

    def __init__(self, memory: GuestMemory, pages: list[int]) -> None:
        if not 2 <= len(pages) <= MAX_RING_PAGES:
            raise VmbusError(HvStatus.INVALID_PARAMETER,
                             f"a ring needs 2-{MAX_RING_PAGES} pages, not {len(pages)}")
        if len(set(pages)) != len(pages):
            raise VmbusError(HvStatus.INVALID_PARAMETER, "a page appears twice in a ring")
        self.memory = memory
        self.pages = [memory.check_page(gpa) for gpa in pages]
        self.data_size = (len(pages) - 1) * PAGE_SIZE
        self.interrupts = 0          # empty -> non-empty transitions that interrupted the reader

    @property
    def header(self) -> int:
        return self.pages[0]

    # --- the header ------------------------------------------------------------------------
    def _u32(self, offset: int) -> int:
        return int.from_bytes(self.memory.read(self.header + offset, 4), "little")

    def _set_u32(self, offset: int, value: int) -> None:
        self.memory.write(self.header + offset, value.to_bytes(4, "little"))

    def _index(self, offset: int, name: str) -> int:
        value = self._u32(offset)
        if value >= self.data_size or value % PACKET_ALIGN:
            raise corrupt(f"{name} index {value:#x} outside a {self.data_size}-byte data area")
        return value

    def read_index(self) -> int:
        return self._index(READ_INDEX, "read")

    def write_index(self) -> int:
        return self._index(WRITE_INDEX, "write")

    @property
    def interrupt_mask(self) -> bool:
        return bool(self._u32(INTERRUPT_MASK))

    def set_interrupt_mask(self, masked: bool) -> None:
        self._set_u32(INTERRUPT_MASK, int(masked))

    def used_bytes(self) -> int:
        return (self.write_index() - self.read_index()) % self.data_size

    def free_bytes(self) -> int:
        return self._free(self.write_index(), self.read_index())

    def _free(self, write: int, read: int) -> int:
        """What a writer may still add: one byte is never used, so full != empty."""
        return self.data_size - (write - read) % self.data_size - 1

    def is_empty(self) -> bool:
        return self.write_index() == self.read_index()

    def has_room(self, size: int) -> bool:
        return size <= self.free_bytes()

    # --- the data area ---------------------------------------------------------------------
    def _pieces(self, offset: int, length: int) -> Iterator[tuple[int, int]]:
        """(GPA, length) runs covering `length` bytes from data offset `offset`, wrapping."""
        offset %= self.data_size
        first = min(length, self.data_size - offset)
        yield from page_runs(self.pages[1:], offset, first)
        yield from page_runs(self.pages[1:], 0, length - first)

    def _copy_in(self, offset: int, data: bytes) -> None:
        done = 0
        for gpa, run in self._pieces(offset, len(data)):
            self.memory.write(gpa, data[done:done + run])
            done += run

    def _copy_out(self, offset: int, length: int) -> bytes:
        return b"".join(self.memory.read(gpa, run) for gpa, run in self._pieces(offset, length))

    # --- packets ---------------------------------------------------------------------------
    def write_packet(self, packet: Packet) -> bool:
        """Append a packet; True if the reader is to be interrupted (empty -> non-empty,
        interrupt mask clear). VmbusError(INSUFFICIENT_BUFFERS) when it does not fit."""
        data = packet.encode()
        write, read = self.write_index(), self.read_index()
        if len(data) > self._free(write, read):
            raise VmbusError(HvStatus.INSUFFICIENT_BUFFERS,
                             f"ring full: {len(data)} bytes do not fit")
        self._copy_in(write, data)
        self._set_u32(WRITE_INDEX, (write + len(data)) % self.data_size)
        if write != read or self.interrupt_mask:
            return False
        self.interrupts += 1
        return True

    def peek_packet(self) -> Packet | None:
        """The next packet without consuming it, None if the ring is empty. The payload
        includes the padding up to the packet's 8-byte length."""
        found = self._next_packet()
        return None if found is None else found[0]

    def read_packet(self) -> Packet | None:
        """Consume the next packet (None if empty)."""
        found = self.read_packet_sized()
        return None if found is None else found[0]

    def read_packet_sized(self) -> tuple[Packet, int] | None:
        """Consume the next packet; with the bytes it took in the ring."""
        found = self._next_packet()
        if found is not None:
            self._set_u32(READ_INDEX, (self.read_index() + found[1]) % self.data_size)
        return found

    def _next_packet(self) -> tuple[Packet, int] | None:
        read = self.read_index()
        used = (self.write_index() - read) % self.data_size
        if not used:
            return None
        if used < DESCRIPTOR_SIZE:
            raise corrupt(f"{used} bytes in the ring, less than a packet descriptor")
        kind, header8, total8, flags, transaction = DESCRIPTOR.unpack(
            self._copy_out(read, DESCRIPTOR_SIZE))
        header, total = header8 * PACKET_ALIGN, total8 * PACKET_ALIGN
        if not DESCRIPTOR_SIZE <= header <= total or total > used:
            raise corrupt(f"packet at {read:#x} has header {header} and length {total} "
                          f"with {used} bytes in the ring")
        payload = self._copy_out(read + header, total - header)
        return Packet(kind, transaction, payload, flags), total
