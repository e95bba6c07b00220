"""Register values and table layouts shared by the guest-paging tests."""

from __future__ import annotations

from dataclasses import dataclass

from tests.unit.mmu.fakes import BITS32, LEVEL4, PAE, BumpAllocator, Geometry, P, RW, SparseMemory, US, map_page
from vtemu.mmu.paging import PagingRegs

CR0_PE = 1
CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_PGE = 1 << 7
CR4_LA57 = 1 << 12
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11

TABLES_AT = 0x10_0000  # guest-physical home of the page tables the tests build


def regs_32bit(cr3: int, *, pse: bool = True, wp: bool = True, pge: bool = False, nxe: bool = False) -> PagingRegs:
    cr4 = (CR4_PSE if pse else 0) | (CR4_PGE if pge else 0)
    return PagingRegs(
        cr0=CR0_PE | CR0_PG | (CR0_WP if wp else 0), cr3=cr3, cr4=cr4, efer=EFER_NXE if nxe else 0
    )


def regs_pae(cr3: int, *, nxe: bool = True, wp: bool = True) -> PagingRegs:
    return PagingRegs(
        cr0=CR0_PE | CR0_PG | (CR0_WP if wp else 0), cr3=cr3, cr4=CR4_PAE, efer=EFER_NXE if nxe else 0
    )


def regs_4level(cr3: int, *, nxe: bool = True, wp: bool = True, pge: bool = False) -> PagingRegs:
    return PagingRegs(
        cr0=CR0_PE | CR0_PG | (CR0_WP if wp else 0),
        cr3=cr3,
        cr4=CR4_PAE | (CR4_PGE if pge else 0),
        efer=EFER_LME | EFER_LMA | (EFER_NXE if nxe else 0),
    )


@dataclass
class Guest:
    """A guest-physical memory with one paging hierarchy under construction."""

    mem: SparseMemory
    alloc: BumpAllocator
    root: int
    geometry: Geometry
    table_flags: list[int] | int = P | RW | US  # what non-leaf entries get unless a test says otherwise

    def map(
        self, linear: int, target: int, leaf_level: int, leaf_flags: int = P | RW | US,
        table_flags: list[int] | int | None = None,
    ) -> list[int]:
        flags = self.table_flags if table_flags is None else table_flags
        return map_page(self.mem, self.alloc, self.root, self.geometry, linear, target, leaf_level, leaf_flags,
                        flags)

    def entry(self, gpa: int) -> int:
        return self.mem.load(gpa, self.geometry.entry_size)

    def poke(self, gpa: int, value: int) -> None:
        self.mem.store(gpa, self.geometry.entry_size, value)


def guest_32bit() -> Guest:
    alloc = BumpAllocator(TABLES_AT)
    return Guest(SparseMemory(), alloc, alloc.alloc_table_page(), BITS32)


def guest_pae() -> Guest:
    """The PDPT sits 32-byte aligned but not page aligned, as CR3 bits 31:5 allow (SDM 4.4.1)."""
    alloc = BumpAllocator(TABLES_AT)
    # PDPTEs have no R/W or U/S: those bits are reserved (Table 4-8).
    return Guest(SparseMemory(), alloc, alloc.alloc_table_page() + 0x40, PAE, [P, P | RW | US])


def guest_4level() -> Guest:
    alloc = BumpAllocator(TABLES_AT)
    return Guest(SparseMemory(), alloc, alloc.alloc_table_page(), LEVEL4)
