"""The synthetic storage device's host end (VSP), on the disk image of `--disk`.

The guest's VSC puts one in-band packet per request in the channel's outbound ring; the
transaction id is the guest's request id and comes back in the completion. The data does
not travel through the ring: the request names the guest pages of its buffer (a GPA range
in the manner of VMBus's GPA-direct packets) and the VSP reads or writes them itself, so a
request of any size costs the guest the same few bytes of ring and no exit of its own.

    request  (payload of a PACKET_DATA_INBAND)
        +0  operation u32          1 read, 2 write, 3 query capacity, 4 flush
        +4  sectors u32            512-byte sectors to move
        +8  lba u64                first sector
        +16 offset u32             byte offset of the buffer in its first page (< 4096)
        +20 page count u32         at most MAX_BUFFER_PAGES
        +24 page frame numbers u64[page count]   the buffer's pages (GPA >> 12), in order
    completion (payload of a PACKET_COMPLETION, same transaction id)
        +0  status u32             0 ok, 1 out of range, 2 bad buffer, 3 bad request,
                                   4 I/O error (the host could not read or write the image)
        +4  sectors u32            sectors moved before the status applied
        +8  value u64              the capacity in sectors (query), else 0

A request reaching past the end moves the sectors before the end and completes with
status 1 and their number (the ATA disk's behaviour too, so a guest prints the same);
one starting past the end moves nothing. A buffer page that is not this partition's RAM,
or a buffer shorter than the transfer, completes with status 2 and moves nothing: the
guest's memory and the image are never touched by a request that cannot be served whole.
Writes go through to the image file sector by sector, as the ATA disk's do.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Protocol

from vtemu.hv.vmbus.channel import DeviceClass
from vtemu.hv.vmbus.errors import HvStatus, VmbusError
from vtemu.hv.vmbus.memory import GuestMemory, page_runs
from vtemu.hv.vmbus.ring import DESCRIPTOR_SIZE, PACKET_COMPLETION, Packet
from vtemu.machine.addr import PAGE_SHIFT, PAGE_SIZE

SECTOR_SIZE = 512
REQUEST = struct.Struct("<IIQII")
COMPLETION = struct.Struct("<IIQ")
MAX_BUFFER_PAGES = 64             # 256 KiB per request


class Operation(IntEnum):
    READ = 1
    WRITE = 2
    QUERY_CAPACITY = 3
    FLUSH = 4


class StorageStatus(IntEnum):
    OK = 0
    OUT_OF_RANGE = 1
    BAD_BUFFER = 2
    BAD_REQUEST = 3
    IO_ERROR = 4


class SectorStore(Protocol):
    """What the VSP needs of a disk image (ata_disk.DiskImage has it)."""

    sectors: int

    def read(self, lba: int) -> bytes: ...
    def write(self, lba: int, data: bytes) -> None: ...
    def flush(self) -> None: ...


class StorageVsp:
    device_class = DeviceClass.STORAGE
    max_response = DESCRIPTOR_SIZE + COMPLETION.size

    def __init__(self, memory: GuestMemory, disk: SectorStore) -> None:
        self.memory = memory
        self.disk = disk
        self.sectors_read = 0
        self.sectors_written = 0

    def handle(self, packet: Packet) -> Packet:
        try:
            status, moved, value = self._serve(packet.payload)
        except OSError:
            status, moved, value = StorageStatus.IO_ERROR, 0, 0
        return Packet(PACKET_COMPLETION, packet.transaction_id,
                      COMPLETION.pack(status, moved, value))

    def _serve(self, request: bytes) -> tuple[StorageStatus, int, int]:
        if len(request) < REQUEST.size:
            return StorageStatus.BAD_REQUEST, 0, 0
        operation, sectors, lba, offset, count = REQUEST.unpack_from(request)
        if operation == Operation.QUERY_CAPACITY:
            return StorageStatus.OK, 0, self.disk.sectors
        if operation == Operation.FLUSH:
            self.disk.flush()
            return StorageStatus.OK, 0, 0
        if operation not in (Operation.READ, Operation.WRITE):
            return StorageStatus.BAD_REQUEST, 0, 0
        try:
            pages = self._buffer_pages(request, offset, count, sectors)
        except VmbusError:
            return StorageStatus.BAD_BUFFER, 0, 0
        inside = max(0, min(sectors, self.disk.sectors - lba))
        if operation == Operation.READ:
            self._read(lba, inside, pages, offset)
        else:
            self._write(lba, inside, pages, offset)
        status = StorageStatus.OK if inside == sectors else StorageStatus.OUT_OF_RANGE
        return status, inside, 0

    def _buffer_pages(self, request: bytes, offset: int, count: int, sectors: int) -> list[int]:
        """The buffer's page GPAs, each checked; VmbusError if any is unusable."""
        if (offset >= PAGE_SIZE or count > MAX_BUFFER_PAGES
                or len(request) < REQUEST.size + 8 * count
                or offset + sectors * SECTOR_SIZE > count * PAGE_SIZE):
            raise VmbusError(HvStatus.INVALID_PARAMETER, "buffer description")
        frames = struct.unpack_from(f"<{count}Q", request, REQUEST.size)
        return [self.memory.check_page(frame << PAGE_SHIFT) for frame in frames]

    def _read(self, lba: int, sectors: int, pages: list[int], offset: int) -> None:
        for index in range(sectors):
            data = self.disk.read(lba + index)
            start = offset + index * SECTOR_SIZE
            done = 0
            for gpa, run in page_runs(pages, start, SECTOR_SIZE):
                self.memory.write(gpa, data[done:done + run])
                done += run
        self.sectors_read += sectors

    def _write(self, lba: int, sectors: int, pages: list[int], offset: int) -> None:
        for index in range(sectors):
            start = offset + index * SECTOR_SIZE
            data = b"".join(self.memory.read(gpa, run)
                            for gpa, run in page_runs(pages, start, SECTOR_SIZE))
            self.disk.write(lba + index, data)
        self.sectors_written += sectors
