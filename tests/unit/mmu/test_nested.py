"""Nested paging: guest walks whose every entry goes through EPT; reference counts, rights, VM-exit qualifications."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.unit.mmu.fakes import (
    BITS32,
    LEVEL4,
    PAE,
    A,
    BumpAllocator,
    Geometry,
    P,
    RW,
    SparseMemory,
    US,
    XD,
    map_page,
)
from tests.unit.mmu.paging_setup import CR0_PE, regs_32bit, regs_4level, regs_pae
from vtemu.machine.addr import GPA, GVA, HPA
from vtemu.mmu.ept import EptMisconfiguration, EptPerm, EptQual, EptTables, EptViolation
from vtemu.mmu.nested import NestedTranslator
from vtemu.mmu.paging import Access, PageFault, PageSize, PagingRegs

READ = Access()
WRITE = Access(write=True)
FETCH = Access(fetch=True)

TABLES = 0xF0_0000_0000  # EPT structures, VMM-private
RAM = 0x10_0000_0000  # guest RAM in host-physical memory
GUEST_TABLES = 0x10_0000  # where the guest kernel keeps its page tables (GPA)
LINEAR = 0x0000_7F80_0060_0ABC
DATA_GPA = 0x60_0ABC  # what LINEAR maps to for every guest page size below
EPT_LEVELS = {PageSize.SIZE_4K: 4, PageSize.SIZE_2M: 3, PageSize.SIZE_1G: 2}
GUEST_LEAF = {4: (3, 0x60_0000), 3: (2, 0x60_0000), 2: (1, 0)}  # guest levels -> (leaf level, target GPA)


class GuestPhysical:
    """Guest-physical memory as the guest kernel sees it, for building its tables (resolved by EPT lookup)."""

    def __init__(self, host: SparseMemory, tables: EptTables) -> None:
        self.host = host
        self.tables = tables

    def hpa(self, gpa: int) -> int:
        mapping = self.tables.lookup(GPA(gpa))
        assert mapping is not None, f"GPA {gpa:#x} not mapped"
        return mapping.page_hpa + (gpa - mapping.page_gpa)

    def load(self, address: int, size: int) -> int:
        return self.host.load(self.hpa(address), size)

    def store(self, address: int, size: int, value: int) -> None:
        self.host.store(self.hpa(address), size, value)


@dataclass
class World:
    host: SparseMemory
    ept: EptTables
    guest: GuestPhysical
    ram_hpa: int  # host-physical address of GPA 0
    root: int  # guest CR3 target
    translator: NestedTranslator

    def map(self, geometry: Geometry, linear: int, target: int, leaf_level: int, leaf_flags: int = P | RW | US,
            table_flags: list[int] | int = P | RW | US) -> list[int]:
        return map_page(self.guest, self._guest_alloc, self.root, geometry, linear, target, leaf_level,
                        leaf_flags, table_flags)

    def __post_init__(self) -> None:
        self._guest_alloc = BumpAllocator(GUEST_TABLES + 0x1000)


def world(ept_page: PageSize = PageSize.SIZE_4K, *, accessed_dirty: bool = False) -> World:
    """Guest RAM mapped with EPT pages of `ept_page`: 16 MiB (4 KiB, 2 MiB pages) or 1 GiB."""
    host = SparseMemory()
    ept = EptTables(host, BumpAllocator(TABLES), accessed_dirty=accessed_dirty)
    if ept_page is PageSize.SIZE_4K:
        ram_hpa = RAM + 0x1000  # 4 KiB aligned only: every mapping is a 4 KiB page
        ept.map(GPA(0), HPA(ram_hpa), 16 << 20, EptPerm.RWX)
    elif ept_page is PageSize.SIZE_2M:
        ram_hpa = RAM + (2 << 20)
        ept.map(GPA(0), HPA(ram_hpa), 16 << 20, EptPerm.RWX)
    else:
        ram_hpa = RAM
        ept.map(GPA(0), HPA(ram_hpa), 1 << 30, EptPerm.RWX)
    assert ept.lookup(GPA(0)).page_size is ept_page  # type: ignore[union-attr]
    translator = NestedTranslator(lambda: ept.eptp, host)
    return World(host, ept, GuestPhysical(host, ept), ram_hpa, GUEST_TABLES, translator)


def formula(n: int, m: int) -> int:
    return n * m + n + m


class TestReferences:
    @pytest.mark.parametrize("ept_page", list(EPT_LEVELS))
    @pytest.mark.parametrize("guest_levels", [4, 3, 2])
    def test_4level_guest(self, guest_levels: int, ept_page: PageSize) -> None:
        """n*m + n + m: 24 for 4 KiB pages on both sides, fewer with large pages on either side."""
        w = world(ept_page)
        leaf_level, target = GUEST_LEAF[guest_levels]
        w.map(LEVEL4, LINEAR, target, leaf_level)
        regs = regs_4level(w.root)
        first = w.translator.translate(regs, GVA(LINEAR), READ)
        m = EPT_LEVELS[ept_page]
        assert first.references == formula(guest_levels, m)
        w.host.forget()
        again = w.translator.translate(regs, GVA(LINEAR), READ)  # accessed flags now set: no updates
        assert again.references == formula(guest_levels, m) == len(w.host.reads)
        assert (again.gpa, again.hpa) == (DATA_GPA, w.ram_hpa + DATA_GPA)
        guest_page = {3: PageSize.SIZE_4K, 2: PageSize.SIZE_2M, 1: PageSize.SIZE_1G}[leaf_level]
        assert again.page_size is min(guest_page, ept_page)

    def test_24_references_for_4k_over_4k(self) -> None:
        w = world(PageSize.SIZE_4K)
        w.map(LEVEL4, LINEAR, 0x60_0000, 3)
        assert w.translator.translate(regs_4level(w.root), GVA(LINEAR), WRITE).references == 24

    def test_pae_guest(self) -> None:
        w = world(PageSize.SIZE_4K)
        w.map(PAE, 0xC000_1000, 0x60_0000, 2, table_flags=[P, P | RW | US])
        t = w.translator.translate(regs_pae(w.root), GVA(0xC000_1ABC), READ)
        assert t.references == formula(3, 4)
        assert t.hpa == w.ram_hpa + 0x60_0ABC

    def test_32bit_guest(self) -> None:
        w = world(PageSize.SIZE_2M)
        w.map(BITS32, 0x8000_1000, 0x60_0000, 1)
        t = w.translator.translate(regs_32bit(w.root), GVA(0x8000_1ABC), READ)
        assert t.references == formula(2, 3)
        assert t.hpa == w.ram_hpa + 0x60_0ABC

    def test_paging_off_is_one_ept_walk(self) -> None:
        w = world(PageSize.SIZE_4K)
        t = w.translator.translate(PagingRegs(cr0=CR0_PE, cr3=0, cr4=0, efer=0), GVA(0x1234), READ)
        assert (t.references, t.gpa, t.hpa) == (4, 0x1234, w.ram_hpa + 0x1234)

    def test_counters_accumulate(self) -> None:
        w = world(PageSize.SIZE_4K)
        w.map(LEVEL4, LINEAR, 0x60_0000, 3)
        regs = regs_4level(w.root)
        w.translator.translate(regs, GVA(LINEAR), READ)
        w.translator.translate(regs, GVA(LINEAR), WRITE)
        with pytest.raises(PageFault):
            w.translator.translate(regs, GVA(0x1000), READ)  # PML4E 0 not present: 1 guest read + 4 EPT
        tr = w.translator
        assert (tr.walks, tr.references, tr.page_faults, tr.violations, tr.misconfigurations) == (3, 53, 1, 0, 0)


class TestRights:
    def test_guest_and_ept_rights_are_combined(self) -> None:
        w = world(PageSize.SIZE_4K)
        w.map(LEVEL4, LINEAR, 0x60_0000, 3, leaf_flags=P | RW | US)
        w.ept.protect(GPA(0x60_0000), 0x1000, EptPerm.RX)
        t = w.translator.translate(regs_4level(w.root), GVA(LINEAR), READ)
        assert (t.readable, t.writable, t.executable) == (True, False, True)

    def test_guest_xd_with_ept_executable(self) -> None:
        w = world(PageSize.SIZE_4K)
        w.map(LEVEL4, LINEAR, 0x60_0000, 3, leaf_flags=P | RW | US | XD)
        t = w.translator.translate(regs_4level(w.root), GVA(LINEAR), READ)
        assert (t.readable, t.writable, t.executable) == (True, True, False)

    def test_guest_fault_comes_before_ept(self) -> None:
        w = world(PageSize.SIZE_4K)
        w.map(LEVEL4, LINEAR, 0x60_0000, 3, leaf_flags=P | US)
        w.ept.unmap(GPA(0x60_0000), 0x1000)
        with pytest.raises(PageFault) as info:
            w.translator.translate(regs_4level(w.root), GVA(LINEAR), WRITE)
        assert info.value.error_code == 0b011

    def test_guest_dirty_is_reported(self) -> None:
        w = world(PageSize.SIZE_4K)
        w.map(LEVEL4, LINEAR, 0x60_0000, 3)
        regs = regs_4level(w.root)
        assert not w.translator.translate(regs, GVA(LINEAR), READ).guest_dirty
        assert w.translator.translate(regs, GVA(LINEAR), WRITE).guest_dirty
        assert w.translator.translate(regs, GVA(LINEAR), READ).guest_dirty


class TestViolations:
    def _violation(self, w: World, regs: PagingRegs, access: Access = READ) -> EptViolation:
        with pytest.raises(EptViolation) as info:
            w.translator.translate(regs, GVA(LINEAR), access)
        assert info.value.linear == LINEAR
        assert w.translator.violations == 1
        return info.value

    def test_during_the_guest_walk(self) -> None:
        """Bit 7 set (linear address valid), bit 8 clear (a paging-structure access), Table 27-7."""
        w = world(PageSize.SIZE_2M)
        entries = w.map(LEVEL4, LINEAR, 0x60_0000, 3)
        w.ept.unmap(GPA(entries[1] & ~0xFFF), 0x1000)  # the page holding the guest's PDPT
        v = self._violation(w, regs_4level(w.root))
        assert (v.gpa, v.qualification) == (entries[1], EptQual.READ | EptQual.LINEAR_VALID)

    def test_during_the_guest_walk_with_ept_accessed_dirty(self) -> None:
        """With EPT A/D, guest paging-structure reads are treated as writes and report bits 0 and 1."""
        w = world(PageSize.SIZE_4K, accessed_dirty=True)
        entries = w.map(LEVEL4, LINEAR, 0x60_0000, 3)
        w.ept.unmap(GPA(entries[2] & ~0xFFF), 0x1000)
        v = self._violation(w, regs_4level(w.root))
        assert (v.gpa, v.qualification) == (entries[2], EptQual.READ | EptQual.WRITE | EptQual.LINEAR_VALID)

    def test_read_only_guest_tables_with_ept_accessed_dirty(self) -> None:
        w = world(PageSize.SIZE_4K, accessed_dirty=True)
        entries = w.map(LEVEL4, LINEAR, 0x60_0000, 3, table_flags=P | RW | US | A)
        w.ept.protect(GPA(entries[0] & ~0xFFF), 0x1000, EptPerm.R)
        v = self._violation(w, regs_4level(w.root))
        expected = EptQual.READ | EptQual.WRITE | EptQual.READABLE | EptQual.LINEAR_VALID
        assert (v.gpa, v.qualification) == (entries[0], expected)

    def test_accessed_flag_update_is_an_ept_write(self) -> None:
        """EPT A/D off: reading read-only guest tables is fine, setting their A flags is a write."""
        w = world(PageSize.SIZE_4K)
        entries = w.map(LEVEL4, LINEAR, 0x60_0000, 3)
        w.ept.protect(GPA(entries[3] & ~0xFFF), 0x1000, EptPerm.R)  # the guest's page table
        v = self._violation(w, regs_4level(w.root))
        assert (v.gpa, v.qualification) == (entries[3], EptQual.WRITE | EptQual.READABLE | EptQual.LINEAR_VALID)

    def test_read_only_guest_tables_are_fine_once_flags_are_set(self) -> None:
        w = world(PageSize.SIZE_4K)
        entries = w.map(LEVEL4, LINEAR, 0x60_0000, 3, table_flags=P | RW | US | A, leaf_flags=P | RW | US | A)
        for gpa in entries:
            w.ept.protect(GPA(gpa & ~0xFFF), 0x1000, EptPerm.R)
        assert w.translator.translate(regs_4level(w.root), GVA(LINEAR), READ).hpa == w.ram_hpa + DATA_GPA

    def test_final_access_not_present(self) -> None:
        """Bits 7 and 8 set: the access was to the translation of the linear address."""
        w = world(PageSize.SIZE_4K)
        w.map(LEVEL4, LINEAR, 0x60_0000, 3)
        w.ept.unmap(GPA(0x60_0000), 0x1000)
        v = self._violation(w, regs_4level(w.root))
        assert v.gpa == DATA_GPA
        assert v.qualification == EptQual.READ | EptQual.LINEAR_VALID | EptQual.LINEAR_TRANSLATION

    def test_final_write_to_read_only_page(self) -> None:
        w = world(PageSize.SIZE_2M)
        w.map(LEVEL4, LINEAR, 0x60_0000, 3)
        w.ept.protect(GPA(0x60_0000), 0x1000, EptPerm.RX)
        v = self._violation(w, regs_4level(w.root), WRITE)
        expected = (EptQual.WRITE | EptQual.READABLE | EptQual.EXECUTABLE
                    | EptQual.LINEAR_VALID | EptQual.LINEAR_TRANSLATION)
        assert (v.gpa, v.qualification) == (DATA_GPA, expected)
        # The guest walk completed (4 entries, each through 3 EPT levels); the failed final EPT walk is not counted.
        assert w.translator.references == 4 + 4 * 3

    def test_final_fetch_from_non_executable_page(self) -> None:
        w = world(PageSize.SIZE_4K)
        w.map(LEVEL4, LINEAR, 0x60_0000, 3)
        w.ept.protect(GPA(0x60_0000), 0x1000, EptPerm.RW)
        v = self._violation(w, regs_4level(w.root), FETCH)
        assert v.qualification & 0x1FF == (EptQual.FETCH | EptQual.READABLE | EptQual.WRITABLE
                                          | EptQual.LINEAR_VALID | EptQual.LINEAR_TRANSLATION)


class TestMisconfiguration:
    def test_in_the_guest_walk(self) -> None:
        w = world(PageSize.SIZE_4K)
        entries = w.map(LEVEL4, LINEAR, 0x60_0000, 3)
        slot = ept_pte_slot(w, entries[1])
        w.host.store(slot, 8, w.host.load(slot, 8) & ~0x7 | 0b010)  # write-only
        with pytest.raises(EptMisconfiguration) as info:
            w.translator.translate(regs_4level(w.root), GVA(LINEAR), READ)
        assert info.value.gpa == entries[1]
        assert w.translator.misconfigurations == 1

    def test_on_the_final_access(self) -> None:
        w = world(PageSize.SIZE_4K)
        w.map(LEVEL4, LINEAR, 0x60_0000, 3)
        slot = ept_pte_slot(w, DATA_GPA)
        w.host.store(slot, 8, w.host.load(slot, 8) & ~(0x7 << 3) | 2 << 3)  # reserved memory type
        with pytest.raises(EptMisconfiguration) as info:
            w.translator.translate(regs_4level(w.root), GVA(LINEAR), READ)
        assert info.value.gpa == DATA_GPA
        assert w.translator.misconfigurations == 1


def ept_pte_slot(w: World, gpa: int) -> int:
    """The host-physical address of the EPT PTE mapping `gpa` (4 KiB EPT pages), found by a raw walk."""
    table = TABLES
    for shift in (39, 30, 21):
        table = w.host.load(table + ((gpa >> shift) & 0x1FF) * 8, 8) & 0xFF_FFFF_F000
    return table + ((gpa >> 12) & 0x1FF) * 8


class TestAccessedDirtyThroughEpt:
    def test_guest_flags_land_in_host_memory(self) -> None:
        w = world(PageSize.SIZE_4K)
        entries = w.map(LEVEL4, LINEAR, 0x60_0000, 3)
        w.translator.translate(regs_4level(w.root), GVA(LINEAR), WRITE)
        assert [w.guest.load(gpa, 8) & 0x60 for gpa in entries] == [0x20, 0x20, 0x20, 0x60]

    def test_32bit_entries_are_merged_into_their_word(self) -> None:
        w = world(PageSize.SIZE_4K)
        entries = w.map(BITS32, 0x8000_1000, 0x60_0000, 1)
        neighbour = entries[1] ^ 4  # the other half of the 8-byte word
        w.guest.store(neighbour, 4, 0xCAFE_F001)
        w.translator.translate(regs_32bit(w.root), GVA(0x8000_1000), WRITE)
        assert w.guest.load(entries[1], 4) & 0x60 == 0x60
        assert w.guest.load(neighbour, 4) == 0xCAFE_F001

    def test_guest_tables_become_ept_dirty_with_ept_accessed_dirty(self) -> None:
        """28.2.4: guest paging-structure accesses count as writes, so their EPT leaves get the dirty flag."""
        w = world(PageSize.SIZE_4K, accessed_dirty=True)
        entries = w.map(LEVEL4, LINEAR, 0x60_0000, 3, table_flags=P | RW | US | A, leaf_flags=P | RW | US | A)
        w.translator.translate(regs_4level(w.root), GVA(LINEAR), READ)
        for gpa in entries:
            page = w.ept.lookup(GPA(gpa))
            assert page is not None and page.accessed and page.dirty
        data = w.ept.lookup(GPA(DATA_GPA))
        assert data is not None and data.accessed and not data.dirty


def test_eptp_is_read_at_every_translation() -> None:
    w = world(PageSize.SIZE_4K)
    w.map(LEVEL4, LINEAR, 0x60_0000, 3)
    other = EptTables(w.host, BumpAllocator(TABLES + (1 << 30)))
    other.map(GPA(0), HPA(RAM + (1 << 30)), 16 << 20, EptPerm.RWX)  # same guest tables, copied below
    for page in range(GUEST_TABLES, GUEST_TABLES + 0x6000, 0x1000):
        for offset in range(0, 0x1000, 8):
            w.host.store(RAM + (1 << 30) + page + offset, 8, w.guest.load(page + offset, 8))
    current = [w.ept.eptp]
    translator = NestedTranslator(lambda: current[0], w.host)
    regs = regs_4level(w.root)
    assert translator.translate(regs, GVA(LINEAR), READ).hpa == w.ram_hpa + DATA_GPA
    current[0] = other.eptp
    assert translator.translate(regs, GVA(LINEAR), READ).hpa == RAM + (1 << 30) + DATA_GPA
