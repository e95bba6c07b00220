"""A partition's memory: guest RAM and firmware ROM behind the hypervisor's EPT.

The guest-physical map follows the reference machine (layout.py): RAM from 0 with the
legacy hole A0000h-EFFFFh left unbacked, the ROM mapped read/execute at FFFF0000h and
aliased at F0000h. Every guest-physical reference reaches host memory only through real
EPT structures kept in VMM-private memory that no EPT entry maps, so the guest cannot see
them. GPAs the EPT does not map cause EPT violations (exit 48), the door to MMIO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import unicorn

from vtemu.machine import layout
from vtemu.machine.addr import GPA, HPA, PAGE_MASK
from vtemu.machine.memory import HostMemory, HostRegion, PageAllocator
from vtemu.machine.translation import Fill, MemoryAccess, PagingRegs
from vtemu.mmu.ept import EptPerm, EptTables
from vtemu.mmu.nested import NestedTranslator
from vtemu.mmu.paging import Access

RWX = EptPerm.R | EptPerm.W | EptPerm.X
RX = EptPerm.R | EptPerm.X
OVERLAY_RANGE = "overlay page"

_ACCESS = {
    (MemoryAccess.READ, False): Access(), (MemoryAccess.READ, True): Access(user=True),
    (MemoryAccess.WRITE, False): Access(write=True),
    (MemoryAccess.WRITE, True): Access(write=True, user=True),
    (MemoryAccess.FETCH, False): Access(fetch=True),
    (MemoryAccess.FETCH, True): Access(fetch=True, user=True),
}


@dataclass(frozen=True)
class GuestRange:
    """One contiguous piece of the guest-physical map."""

    name: str
    gpa: int
    size: int
    hpa: int
    perms: EptPerm


def ram_ranges(ram_size: int, ram_hpa: int) -> list[GuestRange]:
    """Guest RAM around the legacy hole, each GPA backed at ram_hpa + GPA."""
    low_end = min(ram_size, layout.LEGACY_HOLE[0])
    ranges = [GuestRange("low RAM", 0, low_end, ram_hpa, RWX)]
    if ram_size > layout.HIGH_RAM_BASE:
        size = ram_size - layout.HIGH_RAM_BASE
        ranges.append(GuestRange("RAM", layout.HIGH_RAM_BASE, size,
                                 ram_hpa + layout.HIGH_RAM_BASE, RWX))
    return ranges


def rom_ranges() -> list[GuestRange]:
    return [GuestRange("firmware ROM", layout.ROM_GPA, layout.ROM_SIZE, layout.ROM_HPA, RX),
            GuestRange("firmware ROM alias", layout.ROM_ALIAS_GPA, layout.ROM_SIZE,
                       layout.ROM_HPA, RX)]


@dataclass
class PartitionMemory:
    """RAM + ROM + VMM-private tables for one partition, and the EPT that ties them together."""

    index: int
    ram_size: int
    host: HostMemory
    rom: HostRegion
    ram: HostRegion = field(init=False)
    private: HostRegion = field(init=False)
    ept: EptTables = field(init=False)
    ranges: list[GuestRange] = field(init=False)

    def __post_init__(self) -> None:
        ram_hpa = layout.partition_ram_hpa(self.index)
        self.ram = self.host.add(HostRegion(f"partition {self.index} RAM", ram_hpa, self.ram_size))
        private_hpa = layout.VMM_PRIVATE_HPA + self.index * layout.VMM_PRIVATE_SIZE
        self.private = self.host.add(HostRegion(f"partition {self.index} VMM-private", private_hpa,
                                                layout.VMM_PRIVATE_SIZE))
        self.allocator = PageAllocator(self.private)
        low_hpa = layout.VMM_LOW_HPA + self.index * layout.VMM_LOW_SIZE
        self.low_private = self.host.add(HostRegion(f"partition {self.index} VMM-private (low)",
                                                    low_hpa, layout.VMM_LOW_SIZE))
        self.low_allocator = PageAllocator(self.low_private)
        self.ept = EptTables(self.host, self.allocator)
        self.ranges = ram_ranges(self.ram_size, ram_hpa) + rom_ranges()
        self.firmware_pages: list[HostRegion] = []
        for piece in self.ranges:
            self.ept.map(GPA(piece.gpa), HPA(piece.hpa), piece.size, piece.perms)

    def map_firmware_page(self, name: str, gpa: int, data: bytes) -> HostRegion:
        """A read-only page of tables the hypervisor builds for this partition (ACPI), mapped
        at `gpa` in the BIOS area; the vCPUs' physical space must include the region."""
        hpa = layout.FIRMWARE_TABLES_HPA + self.index * layout.FIRMWARE_TABLES_STRIDE
        region = self.host.add(HostRegion(f"partition {self.index} {name}", hpa, len(data),
                                          unicorn.UC_PROT_READ))
        region.buffer[:] = data
        self.ept.map(GPA(gpa), HPA(hpa), len(data), EptPerm.R)
        self.ranges.append(GuestRange(name, gpa, len(data), hpa, EptPerm.R))
        self.firmware_pages.append(region)
        return region

    def set_overlay(self, gpa_page: int, active: bool) -> None:
        """Make one RAM page read/execute-only for the guest, or writable again: an overlay
        page such as the TLFS hypercall page (hv/hypercalls/page.py). The EPT drops W, and
        the page reads as ROM to whoever derives mappings from `is_rom` (shadow paging)."""
        self.ranges = [piece for piece in self.ranges
                       if not (piece.name == OVERLAY_RANGE and piece.gpa == gpa_page)]
        hpa = self.gpa_to_hpa(gpa_page, 4096)
        if hpa is None:
            raise ValueError(f"overlay GPA {gpa_page:#x} is not RAM")
        if active:
            self.ranges.insert(0, GuestRange(OVERLAY_RANGE, gpa_page, 4096, hpa, RX))
        self.ept.protect(GPA(gpa_page), 4096, RX if active else RWX)

    def gpa_to_hpa(self, gpa: int, length: int = 1) -> int | None:
        """Where the hypervisor finds guest-physical memory (None for unbacked GPAs)."""
        for piece in self.ranges:
            if piece.gpa <= gpa and gpa + length <= piece.gpa + piece.size:
                return piece.hpa + (gpa - piece.gpa)
        return None

    def hpa_to_gpa(self, hpa: int) -> int | None:
        """The guest-physical address of a host address in this partition's RAM (ROM: None)."""
        for piece in self.ranges:
            if piece.perms & EptPerm.W and piece.hpa <= hpa < piece.hpa + piece.size:
                return piece.gpa + (hpa - piece.hpa)
        return None

    def is_rom(self, gpa: int) -> bool:
        return any(piece.gpa <= gpa < piece.gpa + piece.size and not piece.perms & EptPerm.W
                   for piece in self.ranges)

    def read_gpa(self, gpa: int, length: int) -> bytes:
        hpa = self.gpa_to_hpa(gpa, length)
        if hpa is None:
            raise MemoryError(f"GPA {gpa:#x}+{length} is not backed by RAM or ROM")
        return self.host.read(HPA(hpa), length)


def create_rom(host: HostMemory, image: bytes) -> HostRegion:
    """The firmware image as read-only host memory (every partition maps the same copy)."""
    if len(image) != layout.ROM_SIZE:
        raise ValueError(f"firmware image must be {layout.ROM_SIZE} bytes, not {len(image)}")
    rom = host.add(HostRegion("firmware ROM", layout.ROM_HPA, layout.ROM_SIZE,
                              unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC))
    rom.buffer[:] = image
    return rom


class NestedPaging:
    """The vCPU's Translator under EPT: guest walk in guest-physical space, each reference through EPT."""

    def __init__(self, host: HostMemory, eptp_source: Callable[[], int]) -> None:
        self.nested = NestedTranslator(eptp_source, host)
        self._eptp_source = eptp_source

    def translate(self, paging: PagingRegs, linear: int, access: MemoryAccess, user: bool) -> Fill:
        result = self.nested.translate(paging, linear, _ACCESS[access, user])  # type: ignore[arg-type]
        ept_tracks_dirty = bool(self._eptp_source() & (1 << 6))
        return Fill(result.hpa & PAGE_MASK, result.readable, result.writable, result.executable,
                    dirty=result.guest_dirty and not ept_tracks_dirty)

