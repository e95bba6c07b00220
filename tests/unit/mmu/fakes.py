"""Test doubles for the MMU: a sparse byte-addressed memory, a bump allocator, and a page-table builder.

The builder writes entries the way a guest kernel would; tests then poke individual entries to set up faults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from vtemu.machine.addr import GPA, HPA

P, RW, US, PWT, PCD, A, D, PS, G = (1 << n for n in (0, 1, 2, 3, 4, 5, 6, 7, 8))
XD = 1 << 63

PAGE = 4096


class SparseMemory:
    """Little-endian memory that reads zero where nothing was written; serves as EntryMemory and HostMemory.

    Every entry access is logged so tests can count references and prove that a walk wrote nothing.
    """

    def __init__(self) -> None:
        self._pages: dict[int, bytearray] = {}
        self.reads: list[tuple[int, int]] = []
        self.writes: list[tuple[int, int, int]] = []

    def load(self, address: int, size: int) -> int:
        page = self._pages.get(address >> 12)
        if page is None:
            return 0
        offset = address & 0xFFF
        assert offset + size <= PAGE, "access crosses a page"
        return int.from_bytes(page[offset : offset + size], "little")

    def store(self, address: int, size: int, value: int) -> None:
        page = self._pages.setdefault(address >> 12, bytearray(PAGE))
        offset = address & 0xFFF
        assert offset + size <= PAGE, "access crosses a page"
        page[offset : offset + size] = value.to_bytes(size, "little")

    # EntryMemory
    def read_entry(self, gpa: GPA, size: int) -> int:
        self.reads.append((gpa, size))
        return self.load(gpa, size)

    def write_entry(self, gpa: GPA, size: int, value: int) -> None:
        self.writes.append((gpa, size, value))
        self.store(gpa, size, value)

    # HostMemory
    def read_u64(self, hpa: HPA) -> int:
        assert hpa % 8 == 0
        self.reads.append((hpa, 8))
        return self.load(hpa, 8)

    def write_u64(self, hpa: HPA, value: int) -> None:
        assert hpa % 8 == 0
        self.writes.append((hpa, 8, value))
        self.store(hpa, 8, value)

    def forget(self) -> None:
        """Clear the access logs (after building tables, before the access under test)."""
        self.reads.clear()
        self.writes.clear()


class BumpAllocator:
    """Hands out consecutive zeroed 4 KiB pages from `base` (SparseMemory is zero until written)."""

    def __init__(self, base: int) -> None:
        self.next = base
        self.count = 0

    def alloc_table_page(self) -> HPA:
        page = self.next
        self.next += PAGE
        self.count += 1
        return HPA(page)


@dataclass(frozen=True)
class Geometry:
    """One paging mode's hierarchy, top-down: (linear-address shift, index mask) per level, and the entry size."""

    levels: Sequence[tuple[int, int]]
    entry_size: int


BITS32 = Geometry(levels=((22, 0x3FF), (12, 0x3FF)), entry_size=4)
PAE = Geometry(levels=((30, 0x3), (21, 0x1FF), (12, 0x1FF)), entry_size=8)
LEVEL4 = Geometry(levels=((39, 0x1FF), (30, 0x1FF), (21, 0x1FF), (12, 0x1FF)), entry_size=8)


class EntryStore(Protocol):
    """What the builder writes through: `load`/`store` of `size` bytes at a guest-physical address."""

    def load(self, address: int, size: int) -> int: ...

    def store(self, address: int, size: int, value: int) -> None: ...


def map_page(
    mem: EntryStore,
    alloc: BumpAllocator,
    root: int,
    geometry: Geometry,
    linear: int,
    target: int,
    leaf_level: int,
    leaf_flags: int,
    table_flags: Sequence[int] | int = P | RW | US,
) -> list[int]:
    """Map `linear` to the page at `target`, ending at level `leaf_level` (PS set if it is not the last level).

    Missing tables come from `alloc`; existing entries are followed. Returns the GPA of the entry used at each
    level, top-down, so tests can tamper with one. `table_flags` is one value or one per non-leaf level.
    """
    if isinstance(table_flags, int):
        table_flags = [table_flags] * leaf_level
    size = geometry.entry_size
    table = root
    addresses = []
    for depth, (shift, mask) in enumerate(geometry.levels[: leaf_level + 1]):
        address = table + ((linear >> shift) & mask) * size
        addresses.append(address)
        if depth == leaf_level:
            ps = PS if depth < len(geometry.levels) - 1 else 0
            mem.store(address, size, target | leaf_flags | ps)
            break
        entry = mem.load(address, size)
        if entry & P:
            table = entry & 0x000F_FFFF_FFFF_F000
        else:
            table = alloc.alloc_table_page()
            mem.store(address, size, table | table_flags[depth])
    return addresses
