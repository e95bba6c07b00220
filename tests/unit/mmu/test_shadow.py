"""Shadow page tables as the processor walks them (mmu/direct.py), and the maps that keep them
coherent with the guest's tables: protection of page-table pages, invalidation on writes,
root caching, the memory bound."""

from __future__ import annotations

import pytest

from tests.unit.mmu.fakes import SparseMemory
from tests.unit.mmu.paging_setup import regs_4level, regs_pae
from vtemu.machine.addr import HPA
from vtemu.machine.translation import GuestPageFault, MemoryAccess
from vtemu.mmu.direct import DirectPaging
from vtemu.mmu.shadow import ShadowMmu

PRIVATE = 0x80_0000_0000
LOW = 0xC000_0000
RAM = 0x10_0000_0000
GVA = 0x0000_7F80_0060_1000
GUEST_PT = 0x10_5000             # a guest page-table page (GPA)
DATA = 0x20_0000                 # a guest data page (GPA)


class Allocator:
    """Zeroed pages, reusing freed ones, as the VMM's PageAllocator hands them out."""

    def __init__(self, host: SparseMemory, base: int) -> None:
        self.host = host
        self.next = base
        self.freed: list[int] = []

    def alloc_table_page(self) -> HPA:
        if self.freed:
            page = self.freed.pop()
            for offset in range(0, 4096, 8):
                self.host.store(page + offset, 8, 0)
            return HPA(page)
        page, self.next = self.next, self.next + 4096
        return HPA(page)

    def free_table_page(self, hpa: int) -> None:
        self.freed.append(hpa)


class World:
    def __init__(self, **limits: int) -> None:
        self.host = SparseMemory()
        self.stale = 0
        self.mmu = ShadowMmu(self.host, Allocator(self.host, PRIVATE), Allocator(self.host, LOW), self._stale,
                             **limits)
        self.cpu = DirectPaging(self.host)

    def _stale(self) -> None:
        self.stale += 1

    def fill(self, root, gva: int = GVA, gpa: int = DATA, sources: tuple[int, ...] = (GUEST_PT + 8,),
             **rights: bool) -> None:
        rights = {"writable": True, "user": True, "no_execute": False} | rights
        self.mmu.install(root, gva, RAM + gpa, gpa, sources, **rights)

    def translate(self, root, gva: int = GVA, access: MemoryAccess = MemoryAccess.READ, user: bool = False,
                  long_mode: bool = True):
        regs = regs_4level(root.table) if long_mode else regs_pae(root.table)
        return self.cpu.translate(regs, gva, access, user)


def test_a_leaf_is_what_the_processor_finds_with_the_guest_rights() -> None:
    w = World()
    root = w.mmu.activate((0x1000, True), vcpu=0)
    w.fill(root, writable=False, user=False, no_execute=True)
    fill = w.translate(root, GVA + 0x123)
    assert fill.hpa == RAM + DATA
    assert (fill.readable, fill.writable, fill.executable) == (True, False, False)
    with pytest.raises(GuestPageFault):               # supervisor-only
        w.translate(root, user=True)
    with pytest.raises(GuestPageFault) as fault:     # nothing shadowed here yet
        w.translate(root, GVA + 0x1000)
    assert fault.value.error_code == 0
    assert w.cpu.references == 4 + 4 + 4


def test_pae_roots_live_below_4_gib_for_32_bit_guests() -> None:
    w = World()
    root = w.mmu.activate((0x9000, False), vcpu=0)
    assert root.table < 1 << 32
    w.fill(root, gva=0xC040_2000)
    assert w.translate(root, 0xC040_2ABC, long_mode=False).hpa == RAM + DATA


def test_leaves_mapping_a_guest_page_table_are_read_only_and_become_so_when_it_turns_into_one() -> None:
    w = World()
    root = w.mmu.activate((0x1000, True), vcpu=0)
    w.fill(root, gva=GVA, gpa=GUEST_PT + 0x1000)                 # an ordinary page, writable
    assert w.translate(root, GVA, MemoryAccess.WRITE).writable
    stale = w.stale
    w.fill(root, gva=GVA + 0x1000, gpa=DATA, sources=(GUEST_PT + 0x1000 + 16,))  # now it holds entries
    assert w.mmu.is_page_table(GUEST_PT + 0x1000)
    assert not w.translate(root, GVA).writable
    assert w.mmu.counters.protections == 1 and w.stale == stale + 1
    w.fill(root, gva=GVA + 0x2000, gpa=GUEST_PT + 0x1000)      # a new mapping of it: read-only at once
    assert not w.translate(root, GVA + 0x2000).writable


def test_a_write_to_an_entry_drops_exactly_the_leaves_derived_from_it() -> None:
    w = World()
    root = w.mmu.activate((0x1000, True), vcpu=0)
    w.fill(root, gva=GVA, sources=(GUEST_PT, GUEST_PT + 0x1000 + 8))
    w.fill(root, gva=GVA + 0x1000, sources=(GUEST_PT, GUEST_PT + 0x1000 + 16))
    assert w.mmu.guest_memory_written(GUEST_PT + 0x1000 + 12, 4) == 1    # upper half of entry 8
    with pytest.raises(GuestPageFault):
        w.translate(root, GVA)
    assert w.translate(root, GVA + 0x1000).hpa == RAM + DATA
    assert w.mmu.guest_memory_written(DATA, 4096) == 0                    # not a table page
    assert w.mmu.guest_memory_written(GUEST_PT, 8) == 1                   # the shared upper entry
    with pytest.raises(GuestPageFault):
        w.translate(root, GVA + 0x1000)
    assert not w.mmu.is_page_table(GUEST_PT)                              # nothing derives from it now


def test_invlpg_drops_one_page_of_one_address_space() -> None:
    w = World()
    first = w.mmu.activate((0x1000, True), vcpu=0)
    w.fill(first)
    second = w.mmu.activate((0x2000, True), vcpu=0)
    w.fill(second)
    assert w.mmu.drop(second, GVA) and not w.mmu.drop(second, GVA)
    with pytest.raises(GuestPageFault):
        w.translate(second)
    assert w.translate(first).hpa == RAM + DATA


def test_switching_back_to_a_cached_root_is_a_hit_and_keeps_its_leaves() -> None:
    w = World()
    a = w.mmu.activate((0x1000, True), vcpu=0)
    w.fill(a)
    w.mmu.activate((0x2000, True), vcpu=0)
    again = w.mmu.activate((0x1000, True), vcpu=0)
    assert again is a and w.translate(again).hpa == RAM + DATA
    assert (w.mmu.counters.cr3_loads, w.mmu.counters.root_hits) == (3, 1)


def test_the_root_cache_evicts_the_least_recently_used_idle_root() -> None:
    w = World(max_roots=2)
    a = w.mmu.activate((0x1000, True), vcpu=0)
    w.fill(a)
    w.mmu.activate((0x2000, True), vcpu=1)        # vCPU 1 runs on this one
    w.mmu.activate((0x3000, True), vcpu=0)        # a is idle and oldest: evicted
    assert w.mmu.counters.evictions == 1
    assert not w.mmu.is_page_table(GUEST_PT)
    b = w.mmu.activate((0x2000, True), vcpu=1)
    assert w.mmu.counters.root_hits == 1 and b.key == (0x2000, True)


def test_shadow_memory_is_bounded_and_the_active_root_is_emptied_in_place() -> None:
    w = World(max_pages=4)                        # the root and one path of three tables
    root = w.mmu.activate((0x1000, True), vcpu=0)
    w.fill(root, gva=GVA)
    assert w.mmu.pages_in_use == 4
    table = root.table
    w.fill(root, gva=GVA + (1 << 30))            # needs a new PDPT path: no room
    assert root.table == table                    # CR3 still points at it
    assert w.mmu.counters.evictions == 1 and w.mmu.pages_in_use == 4
    with pytest.raises(GuestPageFault):
        w.translate(root, GVA)                    # the old contents went
    assert w.translate(root, GVA + (1 << 30)).hpa == RAM + DATA
    assert w.mmu.counters.peak_pages == 4


def test_reset_frees_every_table() -> None:
    w = World()
    root = w.mmu.activate((0x1000, True), vcpu=0)
    w.fill(root)
    w.mmu.activate((0x9000, False), vcpu=1)
    w.mmu.reset()
    assert w.mmu.pages_in_use == 0 and not w.mmu.is_page_table(GUEST_PT)
    assert w.mmu.counters.resets == 1
