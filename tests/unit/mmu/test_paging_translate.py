"""Successful guest walks in every paging mode and page size: addresses, sizes, entries read, permissions."""

from __future__ import annotations

import pytest

from tests.unit.mmu.fakes import PCD, PWT, D, G, P, PS, RW, US, XD
from tests.unit.mmu.paging_setup import (
    CR0_PE,
    CR0_PG,
    CR4_LA57,
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    guest_32bit,
    guest_4level,
    guest_pae,
    regs_32bit,
    regs_4level,
    regs_pae,
)
from vtemu.machine.addr import GVA
from vtemu.mmu.paging import (
    Access,
    PageSize,
    PagingMode,
    PagingRegs,
    Translation,
    UnsupportedPagingMode,
    paging_mode,
    walk,
)

READ = Access()
WRITE = Access(write=True)
FETCH = Access(fetch=True)
USER_READ = Access(user=True)


class TestPagingMode:
    def test_modes_follow_pg_pae_lma(self) -> None:
        assert paging_mode(PagingRegs(cr0=CR0_PE, cr3=0, cr4=CR4_PAE, efer=0)) is PagingMode.NONE
        assert paging_mode(regs_32bit(0)) is PagingMode.BITS32
        assert paging_mode(regs_pae(0)) is PagingMode.PAE
        assert paging_mode(regs_4level(0)) is PagingMode.LEVEL4

    def test_lme_without_lma_is_still_pae(self) -> None:
        """LMA, not LME, says long mode is active (SDM 4.1.1): LME=1 before CR0.PG=1 leaves PAE paging."""
        regs = PagingRegs(cr0=CR0_PE | CR0_PG, cr3=0, cr4=CR4_PAE, efer=EFER_LME)
        assert paging_mode(regs) is PagingMode.PAE

    def test_five_level_paging_is_refused(self) -> None:
        regs = PagingRegs(cr0=CR0_PE | CR0_PG, cr3=0, cr4=CR4_PAE | CR4_LA57, efer=EFER_LME | EFER_LMA)
        with pytest.raises(UnsupportedPagingMode):
            paging_mode(regs)


class _NoMemory:
    def read_entry(self, gpa: int, size: int) -> int:
        raise AssertionError("paging off reads no paging structure")

    def write_entry(self, gpa: int, size: int, value: int) -> None:
        raise AssertionError("paging off writes no paging structure")


def _no_memory() -> _NoMemory:
    return _NoMemory()


def test_paging_off_is_identity_with_every_permission() -> None:
    regs = PagingRegs(cr0=CR0_PE, cr3=0xDEAD000, cr4=0, efer=0)
    t = walk(regs, GVA(0xFFFF_F123), WRITE, mem=_no_memory())
    assert (t.gpa, t.page_base_gpa, t.page_size) == (0xFFFF_F123, 0xFFFF_F000, PageSize.SIZE_4K)
    assert t.readable and t.writable and t.executable
    assert t.entries == ()


class Test32Bit:
    def test_4k_page(self) -> None:
        g = guest_32bit()
        entries = g.map(0x8040_1000, 0x0123_4000, leaf_level=1)
        t = walk(regs_32bit(g.root), GVA(0x8040_1ABC), READ, g.mem)
        assert (t.gpa, t.page_base_gpa, t.page_size) == (0x0123_4ABC, 0x0123_4000, PageSize.SIZE_4K)
        assert list(t.entries) == entries
        assert entries[0] == g.root + (0x8040_1000 >> 22) * 4  # PDE: CR3 31:12 + linear 31:22 * 4 (SDM 4.3)

    def test_cr3_low_bits_are_not_part_of_the_address(self) -> None:
        g = guest_32bit()
        g.map(0x1000, 0x5000, leaf_level=1)
        t = walk(regs_32bit(g.root | PWT | PCD | 0x7), GVA(0x1004), READ, g.mem)
        assert t.gpa == 0x5004

    def test_4m_page_with_pse(self) -> None:
        g = guest_32bit()
        entries = g.map(0xC000_0000, 0x0840_0000, leaf_level=0)
        t = walk(regs_32bit(g.root), GVA(0xC012_3456), READ, g.mem)
        assert (t.gpa, t.page_base_gpa, t.page_size) == (0x0852_3456, 0x0840_0000, PageSize.SIZE_4M)
        assert list(t.entries) == entries

    def test_pse36_high_address_bits(self) -> None:
        """PDE bits 20:13 hold physical bits 39:32 of a 4 MiB page (SDM 4.3 Table 4-4)."""
        g = guest_32bit()
        g.map(0xC000_0000, 0x0840_0000 | (0xA5 << 13), leaf_level=0)
        t = walk(regs_32bit(g.root), GVA(0xC000_0010), READ, g.mem, maxphyaddr=40)
        assert t.gpa == (0xA5 << 32) | 0x0840_0010

    def test_pse36_limited_by_maxphyaddr(self) -> None:
        """With MAXPHYADDR=36 only bits 16:13 carry address bits (M-20 = 16)."""
        g = guest_32bit()
        g.map(0xC000_0000, 0x0840_0000 | (0xF << 13), leaf_level=0)
        t = walk(regs_32bit(g.root), GVA(0xC000_0000), READ, g.mem, maxphyaddr=36)
        assert t.gpa == (0xF << 32) | 0x0840_0000

    def test_ps_is_ignored_without_cr4_pse(self) -> None:
        """CR4.PSE=0: the PDE references a page table whatever its bit 7 says (SDM 4.3 Table 4-5)."""
        g = guest_32bit()
        entries = g.map(0x0040_3000, 0x0077_7000, leaf_level=1)
        g.poke(entries[0], g.entry(entries[0]) | PS)
        t = walk(regs_32bit(g.root, pse=False), GVA(0x0040_3010), READ, g.mem)
        assert (t.gpa, t.page_size) == (0x0077_7010, PageSize.SIZE_4K)
        assert len(t.entries) == 2
        with_pse = walk(regs_32bit(g.root, pse=True), GVA(0x0040_3010), READ, g.mem)
        assert with_pse.page_size is PageSize.SIZE_4M  # the same PDE, read as a 4 MiB page

    def test_nxe_does_not_apply_to_32bit_paging(self) -> None:
        g = guest_32bit()
        g.map(0x1000, 0x2000, leaf_level=1)
        assert walk(regs_32bit(g.root, nxe=True), GVA(0x1000), FETCH, g.mem).executable


class TestPae:
    def test_4k_page(self) -> None:
        g = guest_pae()
        entries = g.map(0xC020_3000, 0x1_2345_6000, leaf_level=2)
        t = walk(regs_pae(g.root), GVA(0xC020_3FFF), READ, g.mem)
        assert (t.gpa, t.page_size) == (0x1_2345_6FFF, PageSize.SIZE_4K)
        assert list(t.entries) == entries
        assert entries[0] == g.root + 3 * 8  # PDPTE index = linear 31:30

    def test_2m_page(self) -> None:
        g = guest_pae()
        g.map(0x4060_0000, 0x2_0000_0000, leaf_level=1)
        t = walk(regs_pae(g.root), GVA(0x406F_EDCB), READ, g.mem)
        assert (t.gpa, t.page_base_gpa, t.page_size) == (0x2_000F_EDCB, 0x2_0000_0000, PageSize.SIZE_2M)
        assert len(t.entries) == 2

    def test_pat_bit_of_a_2m_page_is_neither_address_nor_reserved(self) -> None:
        g = guest_pae()
        g.map(0x4060_0000, 0x2_0000_0000 | (1 << 12), leaf_level=1)
        assert walk(regs_pae(g.root), GVA(0x4060_0000), READ, g.mem).gpa == 0x2_0000_0000


class Test4Level:
    LINEAR = 0x0000_7F12_3456_7000

    @pytest.mark.parametrize(
        ("leaf_level", "target", "size", "expected"),
        [
            (3, 0x00AB_CDEF_0000 + 0x1000 * 3, PageSize.SIZE_4K, 0x00AB_CDEF_3ABC),
            (2, 0x00AB_CC00_0000, PageSize.SIZE_2M, 0x00AB_CC16_7ABC),
            (1, 0x00AB_C000_0000, PageSize.SIZE_1G, 0x00AB_F456_7ABC),
        ],
    )
    def test_page_sizes(self, leaf_level: int, target: int, size: PageSize, expected: int) -> None:
        g = guest_4level()
        entries = g.map(self.LINEAR, target, leaf_level)
        t = walk(regs_4level(g.root), GVA(self.LINEAR + 0xABC), READ, g.mem)
        assert (t.gpa, t.page_size, t.page_base_gpa) == (expected, size, expected & ~(size - 1))
        assert list(t.entries) == entries
        assert len(entries) == leaf_level + 1

    def test_canonical_high_half_address(self) -> None:
        g = guest_4level()
        linear = 0xFFFF_8000_0000_1000
        g.map(linear, 0x3000, leaf_level=3)
        assert walk(regs_4level(g.root), GVA(linear + 8), READ, g.mem).gpa == 0x3008

    def test_non_canonical_address_is_a_caller_bug(self) -> None:
        g = guest_4level()
        with pytest.raises(ValueError, match="canonical"):
            walk(regs_4level(g.root), GVA(0x0000_8000_0000_0000), READ, g.mem)

    def test_bits_62_52_are_ignored(self) -> None:
        """4-level entries reserve only bits 51:M; 62:52 are ignored (SDM 4.5 Tables 4-15..4-19)."""
        g = guest_4level()
        entries = g.map(self.LINEAR, 0x5000, leaf_level=3)
        for gpa in entries:
            g.poke(gpa, g.entry(gpa) | (0x7FF << 52))
        assert walk(regs_4level(g.root), GVA(self.LINEAR), READ, g.mem).gpa == 0x5000

    def test_maxphyaddr_widens_the_address(self) -> None:
        g = guest_4level()
        g.map(self.LINEAR, (1 << 45) | 0x5000, leaf_level=3)
        assert walk(regs_4level(g.root), GVA(self.LINEAR), READ, g.mem, maxphyaddr=46).gpa == (1 << 45) | 0x5000


class TestPermissions:
    """SDM 4.6: the rights granted to an access of the walked privilege."""

    LINEAR = 0x4000_0000

    def _walk(self, leaf_flags: int, access: Access, *, wp: bool = True, table_flags: int = P | RW | US,
              nxe: bool = True) -> Translation:
        g = guest_4level()
        g.map(self.LINEAR, 0x9000, leaf_level=3, leaf_flags=leaf_flags, table_flags=table_flags)
        return walk(regs_4level(g.root, wp=wp, nxe=nxe), GVA(self.LINEAR), access, g.mem)

    def test_supervisor_read_of_read_only_page(self) -> None:
        assert not self._walk(P | US, READ, wp=True).writable
        assert self._walk(P | US, READ, wp=False).writable  # CR0.WP=0: supervisor writes ignore R/W

    def test_user_view_ignores_wp(self) -> None:
        t = self._walk(P | US, USER_READ, wp=False)
        assert t.readable and not t.writable

    def test_read_write_is_the_and_over_all_levels(self) -> None:
        assert not self._walk(P | RW | US, READ, table_flags=P | US).writable
        assert self._walk(P | RW | US, READ, table_flags=P | RW | US).writable

    def test_xd_at_any_level_forbids_fetch(self) -> None:
        assert not self._walk(P | RW | US | XD, READ).executable
        assert not self._walk(P | RW | US, READ, table_flags=P | RW | US | XD).executable
        assert self._walk(P | RW | US, READ).executable

    def test_supervisor_may_read_user_pages(self) -> None:
        t = self._walk(P | RW | US, READ)
        assert t.readable and t.writable and t.executable

    def test_user_privilege_needs_us_everywhere(self) -> None:
        t = self._walk(P | RW | US, USER_READ)
        assert t.readable and t.writable and t.executable


class TestLeafFlags:
    def test_global_needs_cr4_pge(self) -> None:
        g = guest_4level()
        g.map(0x1000, 0x2000, leaf_level=3, leaf_flags=P | RW | G)
        assert walk(regs_4level(g.root, pge=True), GVA(0x1000), READ, g.mem).global_page
        assert not walk(regs_4level(g.root, pge=False), GVA(0x1000), READ, g.mem).global_page

    def test_global_is_a_leaf_property(self) -> None:
        """Bit 8 of a non-leaf entry is ignored (SDM 4.5 Table 4-17)."""
        g = guest_4level()
        g.map(0x1000, 0x2000, leaf_level=3, leaf_flags=P | RW, table_flags=P | RW | G)
        assert not walk(regs_4level(g.root, pge=True), GVA(0x1000), READ, g.mem).global_page

    def test_global_4m_page(self) -> None:
        g = guest_32bit()
        g.map(0x40_0000, 0x80_0000, leaf_level=0, leaf_flags=P | RW | G)
        assert walk(regs_32bit(g.root, pge=True), GVA(0x40_0000), READ, g.mem).global_page

    def test_dirty_reports_the_leaf(self) -> None:
        g = guest_4level()
        g.map(0x1000, 0x2000, leaf_level=3, leaf_flags=P | RW | D)
        g.map(0x3000, 0x4000, leaf_level=3, leaf_flags=P | RW)
        assert walk(regs_4level(g.root), GVA(0x1000), READ, g.mem).dirty
        assert not walk(regs_4level(g.root), GVA(0x3000), READ, g.mem).dirty
