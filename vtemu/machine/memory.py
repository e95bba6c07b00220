"""Host memory: the buffers that back guest RAM, the firmware ROM and VMM-private structures.

Each region is one anonymous mmap reserved without commitment (MAP_NORESERVE), so a 1 GiB
guest costs only the pages it touches. The same buffer is mapped into every vCPU's
Unicorn engine at the region's host-physical address (mem_map_ptr), so vCPUs share RAM
and the VMM reads page tables straight from the buffer without a call into Unicorn.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from dataclasses import dataclass, field

import unicorn

from vtemu.machine.addr import HPA, PAGE_SIZE

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


@dataclass(eq=False)
class HostRegion:
    """A contiguous range of host-physical memory backed by one lazily committed buffer."""

    name: str
    hpa: int
    size: int
    perms: int = unicorn.UC_PROT_ALL
    buffer: mmap.mmap = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.size <= 0 or self.size % PAGE_SIZE or self.hpa % PAGE_SIZE:
            raise ValueError(f"{self.name}: host region must be page-aligned and non-empty")
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
        self.buffer = mmap.mmap(-1, self.size, flags=flags)

    @property
    def end(self) -> int:
        return self.hpa + self.size

    @property
    def host_address(self) -> int:
        """Address of the buffer in this process, for Unicorn's mem_map_ptr."""
        return ctypes.addressof(ctypes.c_char.from_buffer(self.buffer))

    def contains(self, hpa: int, length: int = 1) -> bool:
        return self.hpa <= hpa and hpa + length <= self.end

    def resident_bytes(self) -> int:
        """How much of the buffer the OS has really committed (pages touched so far)."""
        return _resident_pages(self.host_address, self.size) * PAGE_SIZE


def _resident_pages(address: int, size: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    pages = (size + PAGE_SIZE - 1) // PAGE_SIZE
    vector = (ctypes.c_ubyte * pages)()
    if libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), vector) != 0:
        raise OSError(ctypes.get_errno(), "mincore failed")
    return sum(byte & 1 for byte in vector)


class HostMemory:
    """All host regions of a run; reads and writes by HPA (the mmu's HostMemory protocol)."""

    def __init__(self) -> None:
        self.regions: list[HostRegion] = []
        self._last: HostRegion | None = None

    def add(self, region: HostRegion) -> HostRegion:
        for other in self.regions:
            if region.hpa < other.end and other.hpa < region.end:
                raise ValueError(f"host region {region.name} overlaps {other.name}")
        self.regions.append(region)
        return region

    def region(self, hpa: int, length: int = 1) -> HostRegion:
        last = self._last
        if last is not None and last.contains(hpa, length):
            return last
        for region in self.regions:
            if region.contains(hpa, length):
                self._last = region
                return region
        raise MemoryError(f"no host memory at HPA {hpa:#x}+{length}")

    def read(self, hpa: HPA, length: int) -> bytes:
        region = self.region(hpa, length)
        offset = hpa - region.hpa
        return region.buffer[offset:offset + length]

    def write(self, hpa: HPA, data: bytes) -> None:
        region = self.region(hpa, len(data))
        offset = hpa - region.hpa
        region.buffer[offset:offset + len(data)] = data

    def read_u64(self, hpa: int) -> int:
        region = self.region(hpa, 8)
        return _U64.unpack_from(region.buffer, hpa - region.hpa)[0]

    def write_u64(self, hpa: int, value: int) -> None:
        region = self.region(hpa, 8)
        _U64.pack_into(region.buffer, hpa - region.hpa, value & 0xFFFFFFFFFFFFFFFF)

    def read_u32(self, hpa: int) -> int:
        region = self.region(hpa, 4)
        return _U32.unpack_from(region.buffer, hpa - region.hpa)[0]

    def write_u32(self, hpa: int, value: int) -> None:
        region = self.region(hpa, 4)
        _U32.pack_into(region.buffer, hpa - region.hpa, value & 0xFFFFFFFF)

    def map_into(self, uc: unicorn.Uc, regions: list[HostRegion] | None = None) -> None:
        """Make regions (default: all) part of an engine's physical address space."""
        for region in self.regions if regions is None else regions:
            uc.mem_map_ptr(region.hpa, region.size, region.perms, region.host_address)


class PageAllocator:
    """Hands out zeroed 4 KiB pages of a VMM-private region (EPT and shadow tables)."""

    def __init__(self, region: HostRegion) -> None:
        self.region = region
        self._next = region.hpa
        self._free: list[int] = []

    def alloc_table_page(self) -> HPA:
        if self._free:
            hpa = self._free.pop()
        elif self._next < self.region.end:
            hpa, self._next = self._next, self._next + PAGE_SIZE
        else:
            raise MemoryError(f"{self.region.name} is full")
        offset = hpa - self.region.hpa
        self.region.buffer[offset:offset + PAGE_SIZE] = bytes(PAGE_SIZE)
        return HPA(hpa)

    def free_table_page(self, hpa: int) -> None:
        self._free.append(hpa)

    @property
    def pages_in_use(self) -> int:
        return (self._next - self.region.hpa) // PAGE_SIZE - len(self._free)
