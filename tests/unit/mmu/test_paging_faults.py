"""Page faults: which walks fault and the exact error code (SDM 4.7), including reserved-bit checks."""

from __future__ import annotations

import pytest

from tests.unit.mmu.fakes import PS, RW, US, XD, P
from tests.unit.mmu.paging_setup import Guest, guest_32bit, guest_4level, guest_pae, regs_32bit, regs_4level, regs_pae
from vtemu.machine.addr import GVA
from vtemu.mmu.paging import Access, PageFault, PagingRegs, PFErr, walk

READ = Access()
WRITE = Access(write=True)
FETCH = Access(fetch=True)
USER_READ = Access(user=True)
USER_WRITE = Access(write=True, user=True)
USER_FETCH = Access(fetch=True, user=True)

LINEAR = 0x0000_1234_5678_9ABC


def fault(regs: PagingRegs, g: Guest, linear: int, access: Access, *, maxphyaddr: int = 40) -> int:
    """The error code of the #PF the walk must raise; also checks CR2 and that nothing was written."""
    g.mem.forget()
    with pytest.raises(PageFault) as info:
        walk(regs, GVA(linear), access, g.mem, maxphyaddr=maxphyaddr)
    assert info.value.linear == linear
    assert g.mem.writes == []
    return info.value.error_code


def guest_with_page(leaf_flags: int = P | RW | US, table_flags: int = P | RW | US) -> tuple[Guest, list[int]]:
    g = guest_4level()
    return g, g.map(LINEAR, 0x0055_5000, leaf_level=3, leaf_flags=leaf_flags, table_flags=table_flags)


class TestNotPresent:
    @pytest.mark.parametrize("level", [0, 1, 2, 3])
    def test_any_level(self, level: int) -> None:
        g, entries = guest_with_page()
        g.poke(entries[level], g.entry(entries[level]) & ~P)
        assert fault(regs_4level(g.root), g, LINEAR, READ) == 0

    def test_error_code_describes_the_access(self) -> None:
        g = guest_4level()  # nothing mapped
        assert fault(regs_4level(g.root), g, LINEAR, USER_WRITE) == PFErr.W | PFErr.U

    def test_not_present_entry_hides_its_reserved_bits(self) -> None:
        g, entries = guest_with_page()
        g.poke(entries[2], (g.entry(entries[2]) | (1 << 45)) & ~P)
        assert fault(regs_4level(g.root), g, LINEAR, READ) == 0

    def test_not_present_fetch_with_nxe_sets_id(self) -> None:
        g = guest_4level()
        assert fault(regs_4level(g.root, nxe=True), g, LINEAR, FETCH) == PFErr.ID
        assert fault(regs_4level(g.root, nxe=False), g, LINEAR, FETCH) == 0

    def test_32bit(self) -> None:
        g = guest_32bit()
        g.map(0x1000, 0x2000, leaf_level=1, leaf_flags=RW)  # PTE with P=0
        assert fault(regs_32bit(g.root), g, 0x1000, USER_READ) == PFErr.U

    def test_pae_pdpte(self) -> None:
        g = guest_pae()
        assert fault(regs_pae(g.root), g, 0x8000_0000, READ) == 0


class TestProtection:
    def test_supervisor_write_to_read_only_user_page_depends_on_wp(self) -> None:
        g, _ = guest_with_page(leaf_flags=P | US)
        assert walk(regs_4level(g.root, wp=False), GVA(LINEAR), WRITE, g.mem).gpa == 0x0055_5ABC
        assert fault(regs_4level(g.root, wp=True), g, LINEAR, WRITE) == PFErr.P | PFErr.W

    def test_supervisor_write_to_read_only_supervisor_page_depends_on_wp(self) -> None:
        g, _ = guest_with_page(leaf_flags=P, table_flags=P | RW)
        walk(regs_4level(g.root, wp=False), GVA(LINEAR), WRITE, g.mem)
        assert fault(regs_4level(g.root, wp=True), g, LINEAR, WRITE) == PFErr.P | PFErr.W

    def test_user_write_to_read_only_page_ignores_wp(self) -> None:
        g, _ = guest_with_page(leaf_flags=P | US)
        expected = PFErr.P | PFErr.W | PFErr.U
        assert fault(regs_4level(g.root, wp=False), g, LINEAR, USER_WRITE) == expected
        assert fault(regs_4level(g.root, wp=True), g, LINEAR, USER_WRITE) == expected

    def test_read_only_upper_level_denies_user_write(self) -> None:
        g, _ = guest_with_page(leaf_flags=P | RW | US, table_flags=P | US)
        assert fault(regs_4level(g.root), g, LINEAR, USER_WRITE) == PFErr.P | PFErr.W | PFErr.U

    @pytest.mark.parametrize("access", [USER_READ, USER_WRITE, USER_FETCH])
    def test_user_access_to_supervisor_page(self, access: Access) -> None:
        g, _ = guest_with_page(leaf_flags=P | RW)
        expected = PFErr.P | PFErr.U | (PFErr.W if access.write else 0) | (PFErr.ID if access.fetch else 0)
        assert fault(regs_4level(g.root), g, LINEAR, access) == expected

    def test_supervisor_upper_level_makes_the_page_supervisor(self) -> None:
        g, entries = guest_with_page()
        g.poke(entries[1], g.entry(entries[1]) & ~US)
        assert fault(regs_4level(g.root), g, LINEAR, USER_READ) == PFErr.P | PFErr.U

    def test_fetch_from_xd_page_with_nxe(self) -> None:
        g, _ = guest_with_page(leaf_flags=P | RW | US | XD)
        assert fault(regs_4level(g.root, nxe=True), g, LINEAR, FETCH) == PFErr.P | PFErr.ID
        assert fault(regs_4level(g.root, nxe=True), g, LINEAR, USER_FETCH) == PFErr.P | PFErr.U | PFErr.ID

    def test_xd_in_an_upper_level(self) -> None:
        g, entries = guest_with_page()
        g.poke(entries[0], g.entry(entries[0]) | XD)
        assert fault(regs_4level(g.root, nxe=True), g, LINEAR, FETCH) == PFErr.P | PFErr.ID

    def test_xd_does_not_stop_reads(self) -> None:
        g, _ = guest_with_page(leaf_flags=P | RW | US | XD)
        assert not walk(regs_4level(g.root, nxe=True), GVA(LINEAR), READ, g.mem).executable

    def test_pae_xd(self) -> None:
        g = guest_pae()
        g.map(0x1000, 0x2000, leaf_level=2, leaf_flags=P | RW | XD)
        assert fault(regs_pae(g.root, nxe=True), g, 0x1000, FETCH) == PFErr.P | PFErr.ID


class TestReservedBits:
    RSVD = PFErr.P | PFErr.RSVD

    def test_xd_is_reserved_without_nxe(self) -> None:
        """NXE=0: bit 63 is reserved, the fetch takes RSVD and no I/D (I/D needs NXE=1)."""
        g, _ = guest_with_page(leaf_flags=P | RW | US | XD)
        assert fault(regs_4level(g.root, nxe=False), g, LINEAR, FETCH) == self.RSVD
        assert fault(regs_4level(g.root, nxe=False), g, LINEAR, READ) == self.RSVD

    def test_error_code_keeps_the_access_bits(self) -> None:
        g, _ = guest_with_page(leaf_flags=P | RW | US | XD)
        assert fault(regs_4level(g.root, nxe=False), g, LINEAR, USER_WRITE) == self.RSVD | PFErr.W | PFErr.U
        assert fault(regs_4level(g.root, nxe=True), g, 0x7000_0000_0000, FETCH) == PFErr.ID  # not present

    @pytest.mark.parametrize("level", [0, 1, 2, 3])
    def test_address_bit_at_maxphyaddr(self, level: int) -> None:
        g, entries = guest_with_page()
        g.poke(entries[level], g.entry(entries[level]) | (1 << 40))
        assert fault(regs_4level(g.root), g, LINEAR, READ, maxphyaddr=40) == self.RSVD

    def test_bit_51_is_reserved_below_maxphyaddr_52(self) -> None:
        g, entries = guest_with_page()
        g.poke(entries[3], g.entry(entries[3]) | (1 << 51))
        assert fault(regs_4level(g.root), g, LINEAR, READ, maxphyaddr=51) == self.RSVD
        assert walk(regs_4level(g.root), GVA(LINEAR), READ, g.mem, maxphyaddr=52).gpa == (1 << 51) | 0x0055_5ABC

    def test_ps_in_pml4e(self) -> None:
        g, entries = guest_with_page()
        g.poke(entries[0], g.entry(entries[0]) | PS)
        assert fault(regs_4level(g.root), g, LINEAR, READ) == self.RSVD

    @pytest.mark.parametrize("bit", [13, 20, 29])
    def test_1g_page_bits_29_13(self, bit: int) -> None:
        g = guest_4level()
        g.map(LINEAR, 0x40_0000_0000 | (1 << bit), leaf_level=1)
        assert fault(regs_4level(g.root), g, LINEAR, READ) == self.RSVD

    def test_1g_page_bit_12_is_pat(self) -> None:
        g = guest_4level()
        g.map(LINEAR, 0x40_0000_0000 | (1 << 12), leaf_level=1)
        assert walk(regs_4level(g.root), GVA(LINEAR), READ, g.mem).page_base_gpa == 0x40_0000_0000

    @pytest.mark.parametrize("bit", [13, 16, 20])
    def test_2m_page_bits_20_13(self, bit: int) -> None:
        g = guest_4level()
        g.map(LINEAR, 0x40_0000_0000 | (1 << bit), leaf_level=2)
        assert fault(regs_4level(g.root), g, LINEAR, READ) == self.RSVD

    def test_pae_2m_page_bits_20_13(self) -> None:
        g = guest_pae()
        g.map(0x4060_0000, 0x2_0000_0000 | (1 << 13), leaf_level=1)
        assert fault(regs_pae(g.root), g, 0x4060_0000, READ) == self.RSVD

    def test_pae_bits_62_52_are_reserved(self) -> None:
        """Unlike 4-level paging, PAE PDEs and PTEs reserve bits 62:M (SDM 4.4.2 Tables 4-10..4-11)."""
        g = guest_pae()
        entries = g.map(0x1000, 0x2000, leaf_level=2)
        g.poke(entries[2], g.entry(entries[2]) | (1 << 52))
        assert fault(regs_pae(g.root), g, 0x1000, READ) == self.RSVD

    @pytest.mark.parametrize("bit", [1, 2, 5, 6, 7, 8, 40, 63])
    def test_pae_pdpte_reserved_bits(self, bit: int) -> None:
        """Bits 2:1, 8:5 and 63:M of a PDPTE (Table 4-8); on silicon MOV to CR3 would #GP (documented)."""
        g = guest_pae()
        entries = g.map(0x1000, 0x2000, leaf_level=2)
        g.poke(entries[0], g.entry(entries[0]) | (1 << bit))
        assert fault(regs_pae(g.root, nxe=True), g, 0x1000, READ) == self.RSVD

    @pytest.mark.parametrize("maxphyaddr", [40, 46])
    def test_32bit_4m_page_bit_21(self, maxphyaddr: int) -> None:
        """M = min(MAXPHYADDR, 40): PSE-36 never reaches past physical bit 39, so bit 21 stays reserved."""
        g = guest_32bit()
        g.map(0x40_0000, 0x80_0000 | (1 << 21), leaf_level=0)
        assert fault(regs_32bit(g.root), g, 0x40_0000, READ, maxphyaddr=maxphyaddr) == self.RSVD

    def test_32bit_4m_page_reserves_more_with_small_maxphyaddr(self) -> None:
        """Bits 21:(M-19): with MAXPHYADDR=36, bit 17 is reserved; with 40 it is address bit 36."""
        g = guest_32bit()
        g.map(0x40_0000, 0x80_0000 | (1 << 17), leaf_level=0)
        assert fault(regs_32bit(g.root), g, 0x40_0000, READ, maxphyaddr=36) == self.RSVD
        assert walk(regs_32bit(g.root), GVA(0x40_0000), READ, g.mem, maxphyaddr=40).gpa == (1 << 36) | 0x80_0000

    def test_32bit_4k_entries_have_no_reserved_bits(self) -> None:
        g = guest_32bit()
        entries = g.map(0x1000, 0x2000, leaf_level=1)
        g.poke(entries[1], g.entry(entries[1]) | PS | (1 << 9))  # PAT and an ignored bit
        assert walk(regs_32bit(g.root), GVA(0x1000), READ, g.mem).gpa == 0x2000

    def test_reserved_bit_beats_protection(self) -> None:
        """Reserved bits are found while walking, before rights are checked (SDM 4.7)."""
        g, entries = guest_with_page(leaf_flags=P | US)  # read-only
        g.poke(entries[3], g.entry(entries[3]) | (1 << 41))
        assert fault(regs_4level(g.root), g, LINEAR, WRITE) == self.RSVD | PFErr.W
