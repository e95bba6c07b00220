"""Accessed and dirty flags (SDM 4.8): A on every entry used, D on the leaf for writes, nothing on faults."""

from __future__ import annotations

import pytest

from tests.unit.mmu.fakes import A, D, P, RW, US
from tests.unit.mmu.paging_setup import Guest, guest_32bit, guest_4level, guest_pae, regs_32bit, regs_4level, regs_pae
from vtemu.machine.addr import GVA
from vtemu.mmu.paging import Access, PageFault, walk

READ = Access()
WRITE = Access(write=True)
LINEAR = 0x0000_0040_2000_3000


def flags(g: Guest, entries: list[int]) -> list[int]:
    return [g.entry(gpa) & (A | D) for gpa in entries]


@pytest.mark.parametrize("leaf_level", [1, 2, 3])
def test_read_sets_accessed_everywhere_and_no_dirty(leaf_level: int) -> None:
    g = guest_4level()
    entries = g.map(LINEAR, 0x4000_0000, leaf_level)
    walk(regs_4level(g.root), GVA(LINEAR), READ, g.mem)
    assert flags(g, entries) == [A] * len(entries)


@pytest.mark.parametrize("leaf_level", [1, 2, 3])
def test_write_sets_dirty_in_the_leaf_only(leaf_level: int) -> None:
    g = guest_4level()
    entries = g.map(LINEAR, 0x4000_0000, leaf_level)
    t = walk(regs_4level(g.root), GVA(LINEAR), WRITE, g.mem)
    assert flags(g, entries) == [A] * leaf_level + [A | D]
    assert t.dirty


def test_updates_change_nothing_but_the_flags() -> None:
    g = guest_4level()
    entries = g.map(LINEAR, 0x0055_5000, 3)
    before = [g.entry(gpa) for gpa in entries]
    walk(regs_4level(g.root), GVA(LINEAR), WRITE, g.mem)
    assert [g.entry(gpa) for gpa in entries] == [b | A for b in before[:3]] + [before[3] | A | D]


def test_each_update_is_a_read_modify_write_of_that_entry() -> None:
    g = guest_4level()
    entries = g.map(LINEAR, 0x0055_5000, 3)
    g.mem.forget()
    walk(regs_4level(g.root), GVA(LINEAR), WRITE, g.mem)
    walk_reads = [(gpa, 8) for gpa in entries]
    assert g.mem.reads == walk_reads + walk_reads  # the walk, then one re-read per update, top-down
    assert [gpa for gpa, _, _ in g.mem.writes] == entries


def test_flags_already_set_are_not_rewritten() -> None:
    g = guest_4level()
    g.map(LINEAR, 0x0055_5000, 3, leaf_flags=P | RW | US | A | D, table_flags=P | RW | US | A)
    g.mem.forget()
    walk(regs_4level(g.root), GVA(LINEAR), WRITE, g.mem)
    assert g.mem.writes == []
    assert len(g.mem.reads) == 4


def test_dirty_then_read_keeps_dirty() -> None:
    g = guest_4level()
    entries = g.map(LINEAR, 0x0055_5000, 3)
    walk(regs_4level(g.root), GVA(LINEAR), WRITE, g.mem)
    assert walk(regs_4level(g.root), GVA(LINEAR), READ, g.mem).dirty
    assert g.entry(entries[3]) & D


def test_protection_fault_leaves_every_entry_untouched() -> None:
    g = guest_4level()
    entries = g.map(LINEAR, 0x0055_5000, 3, leaf_flags=P | US)
    before = [g.entry(gpa) for gpa in entries]
    with pytest.raises(PageFault):
        walk(regs_4level(g.root), GVA(LINEAR), WRITE, g.mem)
    assert [g.entry(gpa) for gpa in entries] == before
    assert g.mem.writes == []


def test_not_present_leaf_leaves_upper_levels_untouched() -> None:
    g = guest_4level()
    entries = g.map(LINEAR, 0x0055_5000, 3, leaf_flags=RW | US)
    with pytest.raises(PageFault):
        walk(regs_4level(g.root), GVA(LINEAR), READ, g.mem)
    assert flags(g, entries) == [0, 0, 0, 0]


def test_pure_query_writes_nothing_and_reports_the_stored_dirty_flag() -> None:
    g = guest_4level()
    entries = g.map(LINEAR, 0x0055_5000, 3)
    g.mem.forget()
    t = walk(regs_4level(g.root), GVA(LINEAR), WRITE, g.mem, set_accessed_dirty=False)
    assert g.mem.writes == []
    assert not t.dirty
    assert flags(g, entries) == [0, 0, 0, 0]


def test_pae_pdpte_has_no_accessed_flag() -> None:
    """PDPTE bits 8:5 are reserved (Table 4-8): setting A there would make the next walk fault."""
    g = guest_pae()
    entries = g.map(0x1000, 0x2000, leaf_level=2)
    walk(regs_pae(g.root), GVA(0x1000), WRITE, g.mem)
    assert flags(g, entries) == [0, A, A | D]
    walk(regs_pae(g.root), GVA(0x1000), READ, g.mem)


def test_32bit_updates_touch_only_their_four_bytes() -> None:
    g = guest_32bit()
    entries = g.map(0x1000, 0x2000, leaf_level=1)
    neighbour = entries[1] + 4
    g.poke(neighbour, 0x0000_3001)
    g.mem.forget()
    walk(regs_32bit(g.root), GVA(0x1000), WRITE, g.mem)
    assert flags(g, entries) == [A, A | D]
    assert g.entry(neighbour) == 0x0000_3001
    assert {size for _, size, _ in g.mem.writes} == {4}


def test_4m_page_gets_dirty() -> None:
    g = guest_32bit()
    entries = g.map(0x40_0000, 0x80_0000, leaf_level=0)
    walk(regs_32bit(g.root), GVA(0x40_0000), WRITE, g.mem)
    assert flags(g, entries) == [A | D]
