"""EPT: the EPTP, the walk's violations, misconfigurations and A/D flags, and EptTables' page-size choices."""

from __future__ import annotations

import pytest

from tests.unit.mmu.fakes import BumpAllocator, SparseMemory
from vtemu.machine.addr import GPA, HPA
from vtemu.mmu.ept import (
    EptMemoryType,
    EptMisconfiguration,
    EptPerm,
    Eptp,
    EptQual,
    EptTables,
    EptViolation,
    InvalidEptp,
    ept_walk,
)
from vtemu.mmu.paging import Access, PageSize

READ = Access()
WRITE = Access(write=True)
FETCH = Access(fetch=True)

TABLES = 0xF0_0000_0000  # VMM-private host memory for EPT structures
RAM = 0x10_0000_0000  # host-physical base of guest RAM (1 GiB aligned)
K4, M2, G1 = PageSize.SIZE_4K, PageSize.SIZE_2M, PageSize.SIZE_1G


def new_tables(*, accessed_dirty: bool = False) -> tuple[EptTables, SparseMemory, BumpAllocator]:
    host = SparseMemory()
    alloc = BumpAllocator(TABLES)
    return EptTables(host, alloc, accessed_dirty=accessed_dirty), host, alloc


class TestEptp:
    def test_encoding(self) -> None:
        """Bits 2:0 memory type, 5:3 walk length - 1, 6 A/D enable, N-1:12 PML4 address (SDM 24.6.11)."""
        assert Eptp(HPA(0x12_3456_7000)).encode() == 0x12_3456_7000 | 3 << 3 | 6
        assert Eptp(HPA(0x5000), EptMemoryType.UC, accessed_dirty=True).encode() == 0x5000 | 0x18 | 0x40

    def test_unaligned_root_is_refused(self) -> None:
        with pytest.raises(ValueError):
            Eptp(HPA(0x5008))

    def test_decode_roundtrip(self) -> None:
        eptp = Eptp(HPA(0xAB_CDEF_0000), EptMemoryType.WB, accessed_dirty=True)
        assert Eptp.decode(eptp.encode()) == eptp

    @pytest.mark.parametrize(
        "value",
        [
            0x5000 | 0x18 | 1,  # WC is not allowed for paging structures
            0x5000 | 0x18 | 7,
            0x5000 | 0x20 | 6,  # 5-level walk
            0x5000 | 0x10 | 6,  # 3-level walk
            0x5000 | 0x18 | 6 | 1 << 7,  # supervisor shadow-stack control: no CET here
            0x5000 | 0x18 | 6 | 1 << 11,
            0x5000 | 0x18 | 6 | 1 << 40,  # beyond MAXPHYADDR
        ],
    )
    def test_decode_rejects_what_vm_entry_rejects(self, value: int) -> None:
        with pytest.raises(InvalidEptp):
            Eptp.decode(value, maxphyaddr=40)

    def test_tables_publish_their_root(self) -> None:
        tables, _, _ = new_tables(accessed_dirty=True)
        decoded = Eptp.decode(tables.eptp)
        assert decoded.pml4 == TABLES and decoded.accessed_dirty and decoded.memory_type is EptMemoryType.WB


class TestMapping:
    @pytest.mark.parametrize(
        ("gpa", "hpa", "size", "page_size", "references"),
        [
            (0x0, RAM, G1, G1, 2),
            (0x4000_0000, RAM + 0x20_0000, M2, M2, 3),
            (0x20_0000, RAM + 0x1000, M2, K4, 4),  # HPA not 2 MiB aligned: 4 KiB pages
            (0x7000, RAM + 0x3000, K4, K4, 4),
            (0x4000_0000, RAM, G1 - K4, M2, 3),  # a range 4 KiB short of 1 GiB cannot use a 1 GiB page
        ],
    )
    def test_largest_page_alignment_allows(
        self, gpa: int, hpa: int, size: int, page_size: PageSize, references: int
    ) -> None:
        tables, host, _ = new_tables()
        tables.map(GPA(gpa), HPA(hpa), size, EptPerm.RWX)
        mapping = tables.lookup(GPA(gpa + 0xABC))
        assert mapping is not None and mapping.page_size is page_size
        t = ept_walk(tables.eptp, GPA(gpa + 0xABC), READ, host)
        assert (t.hpa, t.page_size, t.references) == (hpa + 0xABC, page_size, references)

    def test_mixed_range_uses_each_size(self) -> None:
        tables, host, _ = new_tables()
        size = G1 + M2 + K4
        tables.map(GPA(0), HPA(RAM), size, EptPerm.RW)
        sizes = [tables.lookup(GPA(g)).page_size for g in (0, G1, G1 + M2)]  # type: ignore[union-attr]
        assert sizes == [G1, M2, K4]
        assert tables.lookup(GPA(size)) is None
        for gpa in (0x3FFF_FFF8, G1 + 0x1F_FFF8, G1 + M2 + 0xFF8):
            assert ept_walk(tables.eptp, GPA(gpa), WRITE, host).hpa == RAM + gpa

    def test_entries_are_real_memory(self) -> None:
        """A 4 KiB leaf is bits 2:0 rights, 5:3 memory type, N-1:12 address (Table 28-6); tables are RWX."""
        tables, host, _ = new_tables()
        tables.map(GPA(0x7000), HPA(RAM + 0x3000), K4, EptPerm.RX, EptMemoryType.UC)
        pml4e = host.load(TABLES, 8)
        assert pml4e & 0x7 == 0x7 and pml4e & ~0xFFF == TABLES + 0x1000
        pte = host.load(TABLES + 0x3000 + 7 * 8, 8)
        assert pte == RAM + 0x3000 | EptMemoryType.UC << 3 | EptPerm.RX

    def test_large_leaves_have_bit_7(self) -> None:
        tables, host, _ = new_tables()
        tables.map(GPA(G1), HPA(RAM), G1, EptPerm.RWX)
        pdpte = host.load(TABLES + 0x1000 + 8, 8)
        assert pdpte == RAM | 1 << 7 | 6 << 3 | 7

    def test_map_refuses_rights_that_would_misconfigure(self) -> None:
        tables, _, _ = new_tables()
        for perms in (EptPerm.W, EptPerm.X, EptPerm.W | EptPerm.X, EptPerm(0)):
            with pytest.raises(ValueError):
                tables.map(GPA(0), HPA(RAM), K4, perms)

    def test_map_refuses_unaligned_ranges(self) -> None:
        tables, _, _ = new_tables()
        with pytest.raises(ValueError):
            tables.map(GPA(0x800), HPA(RAM), K4, EptPerm.R)
        with pytest.raises(ValueError):
            tables.map(GPA(0), HPA(RAM + 0x800), K4, EptPerm.R)
        with pytest.raises(ValueError):
            tables.map(GPA(1 << 48), HPA(RAM), K4, EptPerm.R)


class TestSplitting:
    def test_protect_one_page_of_a_1g_page(self) -> None:
        tables, host, _ = new_tables()
        tables.map(GPA(0), HPA(RAM), G1, EptPerm.RWX)
        target = 0x1234_5000
        tables.protect(GPA(target), K4, EptPerm.R)
        page = tables.lookup(GPA(target))
        assert page is not None and (page.page_size, page.perms, page.page_hpa) == (K4, EptPerm.R, RAM + target)
        neighbour = tables.lookup(GPA(target + K4))
        assert neighbour is not None and (neighbour.page_size, neighbour.perms) == (K4, EptPerm.RWX)
        elsewhere = tables.lookup(GPA(0x2000_0000))
        assert elsewhere is not None and (elsewhere.page_size, elsewhere.perms) == (M2, EptPerm.RWX)
        with pytest.raises(EptViolation):
            ept_walk(tables.eptp, GPA(target), WRITE, host)
        for gpa in (0, 0x1234_4FF8, 0x1234_6000, 0x3FFF_F000):
            assert ept_walk(tables.eptp, GPA(gpa), WRITE, host).hpa == RAM + gpa

    def test_split_keeps_memory_type_and_flags(self) -> None:
        tables, _, _ = new_tables()
        tables.map(GPA(0), HPA(RAM), M2, EptPerm.RW, EptMemoryType.WT)
        tables.protect(GPA(0x1000), K4, EptPerm.R)
        page = tables.lookup(GPA(0x2000))
        assert page is not None and (page.memory_type, page.perms) == (EptMemoryType.WT, EptPerm.RW)

    def test_protect_that_changes_nothing_does_not_split(self) -> None:
        tables, _, alloc = new_tables()
        tables.map(GPA(0), HPA(RAM), M2, EptPerm.RW)
        used = alloc.count
        tables.protect(GPA(0x1000), K4, EptPerm.RW)
        assert alloc.count == used
        assert tables.lookup(GPA(0)).page_size is M2  # type: ignore[union-attr]

    def test_protect_a_whole_large_page_keeps_it_large(self) -> None:
        tables, _, _ = new_tables()
        tables.map(GPA(0), HPA(RAM), M2, EptPerm.RWX)
        tables.protect(GPA(0), M2, EptPerm.RX)
        page = tables.lookup(GPA(0x1000))
        assert page is not None and (page.page_size, page.perms) == (M2, EptPerm.RX)

    def test_unmap_part_of_a_large_page(self) -> None:
        tables, host, _ = new_tables()
        tables.map(GPA(0), HPA(RAM), M2, EptPerm.RWX)
        tables.unmap(GPA(0x10_0000), 0x2000)
        assert tables.lookup(GPA(0x10_0000)) is None and tables.lookup(GPA(0x10_1000)) is None
        assert tables.lookup(GPA(0x10_2000)).page_hpa == RAM + 0x10_2000  # type: ignore[union-attr]
        with pytest.raises(EptViolation):
            ept_walk(tables.eptp, GPA(0x10_1000), READ, host)

    def test_unmap_holes_and_protect_holes_are_harmless(self) -> None:
        tables, _, _ = new_tables()
        tables.map(GPA(0x3000), HPA(RAM), K4, EptPerm.R)
        tables.protect(GPA(0), 0x10000, EptPerm.RW)
        tables.unmap(GPA(0x8000), 0x8000)
        assert tables.lookup(GPA(0x3000)).perms == EptPerm.RW  # type: ignore[union-attr]
        assert tables.lookup(GPA(0x4000)) is None

    def test_remapping_a_whole_region_recycles_its_tables(self) -> None:
        tables, host, alloc = new_tables()
        tables.map(GPA(0), HPA(RAM), M2, EptPerm.RWX)
        tables.protect(GPA(0x5000), K4, EptPerm.R)  # split: one page table
        used = alloc.count
        tables.map(GPA(0), HPA(RAM + G1), M2, EptPerm.RW)  # large again: the page table is released
        assert tables.lookup(GPA(0x5000)).page_size is M2  # type: ignore[union-attr]
        assert ept_walk(tables.eptp, GPA(0x5008), WRITE, host).hpa == RAM + G1 + 0x5008
        tables.protect(GPA(0x7000), K4, EptPerm.R)  # split again: reuses the released page
        assert alloc.count == used
        assert tables.lookup(GPA(0x6000)).page_hpa == RAM + G1 + 0x6000  # type: ignore[union-attr]

    def test_unmap_whole_region_releases_nested_tables(self) -> None:
        tables, _, alloc = new_tables()
        tables.map(GPA(0), HPA(RAM + K4), 4 * M2, EptPerm.RWX)  # 4 KiB pages under one PD
        used = alloc.count
        tables.unmap(GPA(0), G1)  # the whole PDPTE: PD and 4 page tables go to the free list
        assert tables.lookup(GPA(0)) is None
        tables.map(GPA(0), HPA(RAM + K4), 4 * M2, EptPerm.RWX)
        assert alloc.count == used


def raw_tables() -> tuple[SparseMemory, int, list[int]]:
    """A 4 KiB mapping of GPA 0x1000 built by hand; returns host, EPTP and the four entry HPAs."""
    host = SparseMemory()
    pml4, pdpt, pd, pt = TABLES, TABLES + 0x1000, TABLES + 0x2000, TABLES + 0x3000
    host.store(pml4, 8, pdpt | 7)
    host.store(pdpt, 8, pd | 7)
    host.store(pd, 8, pt | 7)
    host.store(pt + 8, 8, RAM | 6 << 3 | 7)
    return host, Eptp(HPA(pml4)).encode(), [pml4, pdpt, pd, pt + 8]


class TestViolations:
    def test_not_present_leaf(self) -> None:
        host, eptp, entries = raw_tables()
        host.store(entries[3], 8, RAM | 6 << 3)  # R/W/X = 000b: not present, the rest is ignored
        with pytest.raises(EptViolation) as info:
            ept_walk(eptp, GPA(0x1008), READ, host)
        assert (info.value.gpa, info.value.qualification, info.value.linear) == (0x1008, EptQual.READ, None)

    @pytest.mark.parametrize("level", [0, 1, 2])
    def test_not_present_upper_level(self, level: int) -> None:
        host, eptp, entries = raw_tables()
        host.store(entries[level], 8, 0)
        with pytest.raises(EptViolation) as info:
            ept_walk(eptp, GPA(0x1000), WRITE, host)
        assert info.value.qualification == EptQual.WRITE

    def test_write_to_read_only_page(self) -> None:
        host, eptp, entries = raw_tables()
        host.store(entries[3], 8, RAM | 6 << 3 | EptPerm.RX)
        with pytest.raises(EptViolation) as info:
            ept_walk(eptp, GPA(0x1000), WRITE, host)
        assert info.value.qualification == EptQual.WRITE | EptQual.READABLE | EptQual.EXECUTABLE

    def test_fetch_from_non_executable_page(self) -> None:
        host, eptp, entries = raw_tables()
        host.store(entries[3], 8, RAM | 6 << 3 | EptPerm.RW)
        with pytest.raises(EptViolation) as info:
            ept_walk(eptp, GPA(0x1000), FETCH, host)
        assert info.value.qualification == EptQual.FETCH | EptQual.READABLE | EptQual.WRITABLE

    def test_rights_are_the_and_over_all_levels(self) -> None:
        host, eptp, entries = raw_tables()
        host.store(entries[1], 8, host.load(entries[1], 8) & ~0x7 | EptPerm.RX)  # PDPTE without write
        host.store(entries[2], 8, host.load(entries[2], 8) & ~0x7 | EptPerm.RW)  # PDE without execute
        t = ept_walk(eptp, GPA(0x1000), READ, host)
        assert (t.readable, t.writable, t.executable) == (True, False, False)
        with pytest.raises(EptViolation) as info:
            ept_walk(eptp, GPA(0x1000), WRITE, host)
        assert info.value.qualification == EptQual.WRITE | EptQual.READABLE

    def test_walk_reports_rights_of_a_good_page(self) -> None:
        host, eptp, _ = raw_tables()
        t = ept_walk(eptp, GPA(0x1ABC), FETCH, host)
        assert (t.hpa, t.readable, t.writable, t.executable, t.references) == (RAM + 0xABC, True, True, True, 4)


class TestMisconfigurations:
    @pytest.mark.parametrize("perms", [0b010, 0b110, 0b100])
    @pytest.mark.parametrize("level", [0, 1, 2, 3])
    def test_write_without_read_and_execute_only(self, level: int, perms: int) -> None:
        host, eptp, entries = raw_tables()
        host.store(entries[level], 8, host.load(entries[level], 8) & ~0x7 | perms)
        with pytest.raises(EptMisconfiguration) as info:
            ept_walk(eptp, GPA(0x1010), READ, host)
        assert info.value.gpa == 0x1010

    def test_misconfiguration_beats_the_rights_check(self) -> None:
        host, eptp, entries = raw_tables()
        host.store(entries[3], 8, RAM | 6 << 3 | 0b010)
        with pytest.raises(EptMisconfiguration):
            ept_walk(eptp, GPA(0x1000), WRITE, host)

    @pytest.mark.parametrize(
        ("level", "bit"),
        [(0, 3), (0, 6), (0, 7), (1, 3), (2, 6), (0, 40), (1, 45), (2, 51), (3, 40)],
    )
    def test_reserved_bits(self, level: int, bit: int) -> None:
        """PML4E 7:3, non-leaf 6:3, every entry 51:N (Tables 28-1..28-6)."""
        host, eptp, entries = raw_tables()
        host.store(entries[level], 8, host.load(entries[level], 8) | 1 << bit)
        with pytest.raises(EptMisconfiguration):
            ept_walk(eptp, GPA(0x1000), READ, host, maxphyaddr=40)

    def test_high_bits_and_pte_bit_7_are_ignored(self) -> None:
        host, eptp, entries = raw_tables()
        for hpa in entries:
            host.store(hpa, 8, host.load(hpa, 8) | 0xFFF << 52)
        host.store(entries[3], 8, host.load(entries[3], 8) | 1 << 7 | 1 << 6)  # PTE bit 7 ignored, 6 = IPAT
        assert ept_walk(eptp, GPA(0x1000), READ, host).hpa == RAM

    @pytest.mark.parametrize("memory_type", [2, 3, 7])
    def test_invalid_leaf_memory_type(self, memory_type: int) -> None:
        host, eptp, entries = raw_tables()
        host.store(entries[3], 8, RAM | memory_type << 3 | 7)
        with pytest.raises(EptMisconfiguration):
            ept_walk(eptp, GPA(0x1000), READ, host)

    @pytest.mark.parametrize(("bit", "misconfigured"), [(12, True), (20, True), (21, False)])
    def test_2m_leaf_reserved_bits_20_12(self, bit: int, misconfigured: bool) -> None:
        host, eptp, entries = raw_tables()
        host.store(entries[2], 8, RAM | 1 << bit | 1 << 7 | 6 << 3 | 7)
        if misconfigured:
            with pytest.raises(EptMisconfiguration):
                ept_walk(eptp, GPA(0x1000), READ, host)
        else:
            assert ept_walk(eptp, GPA(0x1000), READ, host).hpa == RAM | 1 << 21 | 0x1000

    def test_1g_leaf_reserved_bits_29_12(self) -> None:
        host, eptp, entries = raw_tables()
        host.store(entries[1], 8, RAM | 1 << 29 | 1 << 7 | 6 << 3 | 7)
        with pytest.raises(EptMisconfiguration):
            ept_walk(eptp, GPA(0x1000), READ, host)

    def test_not_present_entry_is_a_violation_whatever_else_it_holds(self) -> None:
        host, eptp, entries = raw_tables()
        host.store(entries[2], 8, 0xFFF0_0000_0000_0FF8)
        with pytest.raises(EptViolation):
            ept_walk(eptp, GPA(0x1000), READ, host)


class TestAccessedDirty:
    def test_read_sets_accessed_in_every_entry(self) -> None:
        host, _, entries = raw_tables()
        eptp = Eptp(HPA(TABLES), accessed_dirty=True).encode()
        ept_walk(eptp, GPA(0x1000), READ, host)
        assert [host.load(e, 8) >> 8 & 3 for e in entries] == [1, 1, 1, 1]

    def test_write_sets_dirty_in_the_leaf(self) -> None:
        host, _, entries = raw_tables()
        eptp = Eptp(HPA(TABLES), accessed_dirty=True).encode()
        ept_walk(eptp, GPA(0x1000), WRITE, host)
        assert [host.load(e, 8) >> 8 & 3 for e in entries] == [1, 1, 1, 3]

    def test_large_leaf_gets_dirty(self) -> None:
        tables, host, _ = new_tables(accessed_dirty=True)
        tables.map(GPA(0), HPA(RAM), M2, EptPerm.RW)
        ept_walk(tables.eptp, GPA(0x1000), WRITE, host)
        page = tables.lookup(GPA(0))
        assert page is not None and page.accessed and page.dirty

    def test_flags_already_set_are_not_rewritten(self) -> None:
        host, _, entries = raw_tables()
        eptp = Eptp(HPA(TABLES), accessed_dirty=True).encode()
        ept_walk(eptp, GPA(0x1000), WRITE, host)
        host.forget()
        ept_walk(eptp, GPA(0x1000), WRITE, host)
        assert host.writes == [] and [hpa for hpa, _ in host.reads] == entries

    def test_disabled_means_no_writes(self) -> None:
        host, eptp, _ = raw_tables()
        host.forget()
        ept_walk(eptp, GPA(0x1000), WRITE, host)
        assert host.writes == [] and len(host.reads) == 4

    def test_violation_writes_nothing(self) -> None:
        host, _, entries = raw_tables()
        host.store(entries[3], 8, RAM | 6 << 3 | EptPerm.R)
        host.forget()
        with pytest.raises(EptViolation):
            ept_walk(Eptp(HPA(TABLES), accessed_dirty=True).encode(), GPA(0x1000), WRITE, host)
        assert host.writes == []
