"""Shadow page tables: guest-linear -> host-physical tables the processor really walks.

A hypervisor without EPT composes the guest's mapping (linear -> guest-physical, the guest's
own tables) with its own (guest-physical -> host-physical) and writes the result into tables
of its own, in memory the guest cannot reach; CR3 points at them while the guest runs
(`mmu/direct.py` is that processor). This module keeps those tables: one tree per guest
address space ("root", keyed by the guest's CR3), filled lazily one 4 KiB leaf at a time by
the hypervisor when the processor faults on a missing entry (hv/shadow_paging.py).

The tree has the processor's format: 4-level for a guest in IA-32e mode, PAE otherwise (a
32-bit guest's own tables may be 32-bit or PAE; the shadow is PAE either way, with its PDPT
below 4 GiB, where a PAE CR3 can point). Upper-level entries grant everything; each leaf
carries the rights the guest's walk found (SDM 4.6: rights are the AND over all levels, so
putting them all at the leaf is equivalent). Guest large pages (2 MiB, 4 MiB, 1 GiB) are
shadowed by 4 KiB leaves.

Coherence, as the classic shadow MMUs keep it: every leaf remembers which guest paging-
structure entries its walk read. The pages holding them are the guest's page-table pages;
every leaf that maps one of those pages is read-only, so the guest cannot write its tables
without trapping. When it does (or when the hypervisor itself writes guest memory), the
leaves derived from the entries written are dropped and refilled on the next access. A
root's tree therefore stays valid while other roots run, which is what makes switching back
to a cached address space cheap. Shadow memory is bounded: past `max_pages` table pages the
least recently used other roots are evicted, and if that is not enough the active one is
rebuilt from nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable

from vtemu.machine.addr import HPA, PAGE_MASK, PAGE_SIZE
from vtemu.mmu.ept import HostMemory, TableAllocator

P, RW, US, A, D = 1 << 0, 1 << 1, 1 << 2, 1 << 5, 1 << 6
XD = 1 << 63
_TABLE = P | RW | US | A            # an upper-level entry: grants everything, already accessed
_ADDRESS = ((1 << 52) - 1) & PAGE_MASK

RootKey = tuple[int, bool]          # (the guest's CR3, IA-32e mode)


@dataclass(frozen=True)
class _Format:
    shifts: tuple[int, ...]         # index shift of each level, root first
    root_entries: int               # entries used in the root table
    root_flags: int                 # flags of a root entry (PAE PDPTEs allow P only, SDM 4.4.1)


LEVEL4 = _Format((39, 30, 21, 12), 512, _TABLE)
PAE = _Format((30, 21, 12), 4, P)


@dataclass(slots=True)
class _Leaf:
    entry_hpa: int                  # where the shadow PTE lives
    sources: tuple[int, ...]        # the guest entries (GPAs) the walk behind it read
    gpa_page: int                   # the guest page it maps


@dataclass
class _Root:
    key: RootKey
    serial: int
    format: _Format
    table: int                      # HPA of the PML4 or the PDPT
    pages: list[int] = field(default_factory=list)
    leaves: dict[int, _Leaf] = field(default_factory=dict)


@dataclass
class ShadowCounters:
    cr3_loads: int = 0
    root_hits: int = 0
    leaves_filled: int = 0
    leaves_dropped: int = 0
    protections: int = 0            # leaves made read-only because their page became a table
    evictions: int = 0
    resets: int = 0
    peak_pages: int = 0


class ShadowMmu:
    """The shadow trees of one partition, shared by its vCPUs, and the maps that keep them coherent."""

    def __init__(self, host: HostMemory, allocator: TableAllocator, low_allocator: TableAllocator,
                 on_stale: Callable[[], None], max_pages: int = 4096, max_roots: int = 16) -> None:
        self._host = host
        self._allocator = allocator
        self._low_allocator = low_allocator     # PAE roots: below 4 GiB
        self._on_stale = on_stale               # a leaf was removed or downgraded: flush TLBs
        self.max_pages = max_pages
        self.max_roots = max_roots
        self.counters = ShadowCounters()
        self._roots: OrderedDict[RootKey, _Root] = OrderedDict()
        self._by_serial: dict[int, _Root] = {}
        self._serials = 0
        self._pages = 0
        self._derived: dict[int, set[tuple[int, int]]] = {}    # guest entry GPA -> leaves
        self._table_entries: dict[int, set[int]] = {}          # guest table page -> entries in use
        self._mappers: dict[int, set[tuple[int, int]]] = {}    # guest page -> leaves mapping it
        self._active: dict[int, RootKey] = {}                  # vCPU -> the root it runs on

    # --- roots -------------------------------------------------------------------------------
    @property
    def pages_in_use(self) -> int:
        return self._pages

    def activate(self, key: RootKey, vcpu: int) -> _Root:
        """The root for a guest address space (a MOV to CR3 on `vcpu`): cached, or a new tree."""
        self.counters.cr3_loads += 1
        self._active.pop(vcpu, None)
        root = self._roots.get(key)
        if root is not None:
            self.counters.root_hits += 1
            self._roots.move_to_end(key)
        else:
            for victim in self._inactive_roots():
                if len(self._roots) < self.max_roots:
                    break
                self._evict(victim)
            root = self._new_root(key)
        self._active[vcpu] = key
        return root

    def deactivate(self, vcpu: int) -> None:
        self._active.pop(vcpu, None)

    def _inactive_roots(self) -> list[_Root]:
        """Roots no vCPU runs on, least recently used first."""
        active = set(self._active.values())
        return [root for key, root in self._roots.items() if key not in active]

    def _new_root(self, key: RootKey) -> _Root:
        long_mode = key[1]
        self._serials += 1
        table = (self._allocator if long_mode else self._low_allocator).alloc_table_page()
        root = _Root(key, self._serials, LEVEL4 if long_mode else PAE, table, [table])
        self._count_pages(1)
        self._roots[key] = root
        self._by_serial[root.serial] = root
        return root

    def reset(self) -> None:
        """Forget every tree (the guest changed what its tables mean: paging mode, WP, NXE).
        vCPUs must activate a root again before they run paged."""
        if self._roots:
            self.counters.resets += 1
        for root in list(self._roots.values()):
            self._free(root)
        self._active.clear()
        self._on_stale()

    def _evict(self, root: _Root) -> None:
        self.counters.evictions += 1
        self._free(root)
        self._on_stale()

    def _free(self, root: _Root) -> None:
        for gva_page in list(root.leaves):
            self._unlink(root, gva_page)
        for hpa in root.pages:
            allocator = self._low_allocator if hpa == root.table and root.format is PAE else self._allocator
            allocator.free_table_page(hpa)
        self._count_pages(-len(root.pages))
        del self._roots[root.key]
        del self._by_serial[root.serial]

    def _count_pages(self, delta: int) -> None:
        self._pages += delta
        self.counters.peak_pages = max(self.counters.peak_pages, self._pages)

    # --- leaves ------------------------------------------------------------------------------
    def install(self, root: _Root, gva_page: int, hpa_page: int, gpa_page: int,
                sources: Iterable[int], writable: bool, user: bool, no_execute: bool,
                force: bool = False) -> None:
        """Map one 4 KiB guest-linear page of `root` to host page `hpa_page` (guest page `gpa_page`).
        A leaf mapping a page-table page is read-only unless `force` (one stepped write)."""
        sources = tuple(sources)
        if gva_page in root.leaves:
            self._unlink(root, gva_page)
        self._make_room(root, len(root.format.shifts) - 1)
        self._track(sources)
        if gpa_page in self._table_entries and not force:
            writable = False                     # the guest's own tables stay write-protected
        entry_hpa = self._leaf_slot(root, gva_page)
        value = hpa_page | P | A | (RW | D if writable else 0) | (US if user else 0) | (XD if no_execute else 0)
        self._host.write_u64(HPA(entry_hpa), value)
        root.leaves[gva_page] = _Leaf(entry_hpa, sources, gpa_page)
        for source in sources:
            self._derived.setdefault(source, set()).add((root.serial, gva_page))
        self._mappers.setdefault(gpa_page, set()).add((root.serial, gva_page))
        self.counters.leaves_filled += 1

    def drop(self, root: _Root, gva_page: int) -> bool:
        """INVLPG: forget one page of one address space."""
        if gva_page not in root.leaves:
            return False
        self._unlink(root, gva_page)
        self._on_stale()
        return True

    def _unlink(self, root: _Root, gva_page: int) -> None:
        leaf = root.leaves.pop(gva_page)
        self._host.write_u64(HPA(leaf.entry_hpa), 0)
        key = (root.serial, gva_page)
        for source in leaf.sources:
            users = self._derived.get(source)
            if users is None:
                continue
            users.discard(key)
            if not users:
                del self._derived[source]
                self._untrack(source)
        mappers = self._mappers.get(leaf.gpa_page)
        if mappers is not None:
            mappers.discard(key)
            if not mappers:
                del self._mappers[leaf.gpa_page]
        self.counters.leaves_dropped += 1

    def _leaf_slot(self, root: _Root, gva_page: int) -> int:
        """The HPA of the leaf entry for `gva_page`, creating the tables on the way."""
        fmt = root.format
        table = root.table
        for depth, shift in enumerate(fmt.shifts[:-1]):
            slot = table + ((gva_page >> shift) & 0x1FF) * 8
            entry = self._host.read_u64(HPA(slot))
            if not entry & P:
                child = self._allocator.alloc_table_page()
                root.pages.append(child)
                self._count_pages(1)
                entry = child | (fmt.root_flags if depth == 0 else _TABLE)
                self._host.write_u64(HPA(slot), entry)
            table = entry & _ADDRESS
        return table + ((gva_page >> fmt.shifts[-1]) & 0x1FF) * 8

    def _make_room(self, root: _Root, tables_needed: int) -> None:
        """Keep within `max_pages`: evict idle roots, then, if need be, empty this one in place
        (its root table stays, so the CR3 that points at it stays valid)."""
        if self._pages + tables_needed <= self.max_pages:
            return
        for other in self._inactive_roots():
            if other is not root:
                self._evict(other)
                if self._pages + tables_needed <= self.max_pages:
                    return
        self.counters.evictions += 1
        for gva_page in list(root.leaves):
            self._unlink(root, gva_page)
        for hpa in root.pages[1:]:
            self._allocator.free_table_page(hpa)
        self._count_pages(1 - len(root.pages))
        del root.pages[1:]
        self._host_clear(root.table)
        self._on_stale()

    def _host_clear(self, table: int) -> None:
        for offset in range(0, PAGE_SIZE, 8):
            self._host.write_u64(HPA(table + offset), 0)

    # --- the guest's page-table pages --------------------------------------------------------
    def is_page_table(self, gpa_page: int) -> bool:
        return gpa_page in self._table_entries

    def _track(self, sources: tuple[int, ...]) -> None:
        for source in sources:
            page = source & PAGE_MASK
            entries = self._table_entries.get(page)
            if entries is None:
                self._table_entries[page] = entries = set()
                self._protect(page)
            entries.add(source)

    def _untrack(self, source: int) -> None:
        page = source & PAGE_MASK
        entries = self._table_entries.get(page)
        if entries is not None:
            entries.discard(source)
            if not entries:
                del self._table_entries[page]

    def _protect(self, gpa_page: int) -> None:
        """A guest page just became a page-table page: every leaf mapping it loses write access."""
        downgraded = False
        for serial, gva_page in self._mappers.get(gpa_page, ()):
            leaf = self._by_serial[serial].leaves[gva_page]
            entry = self._host.read_u64(HPA(leaf.entry_hpa))
            if entry & RW:
                self._host.write_u64(HPA(leaf.entry_hpa), entry & ~(RW | D))
                self.counters.protections += 1
                downgraded = True
        if downgraded:
            self._on_stale()

    def guest_memory_written(self, gpa: int, length: int) -> int:
        """Guest memory [gpa, gpa+length) changed: drop the leaves derived from any entry in it.
        Returns how many leaves went."""
        if not self._table_entries:
            return 0
        first, end = gpa & ~7, gpa + length
        if not any((page in self._table_entries) for page in range(first & PAGE_MASK, end, PAGE_SIZE)):
            return 0
        victims: set[tuple[int, int]] = set()
        for address in range(first, end, 4):
            users = self._derived.get(address)
            if users:
                victims |= users
        for serial, gva_page in victims:
            root = self._by_serial.get(serial)
            if root is not None and gva_page in root.leaves:
                self._unlink(root, gva_page)
        if victims:
            self._on_stale()
        return len(victims)
