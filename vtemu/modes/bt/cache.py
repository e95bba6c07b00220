"""The translation cache: TC memory, what each TC address stands for, and the lookup table.

One cache per vCPU and code mode (32- or 64-bit kernel code), in host memory the guest has
no guest-physical address for. Code is allocated sequentially; fragments are never freed
one by one: when the cache is full, or guest code it was translated from changes, the whole
cache is flushed (at the next stop, when nothing executes from it). The precise-state map
is therefore append-only and kept sorted by construction.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field

from vtemu.machine.decode import CodeMode
from vtemu.machine.memory import HostMemory, HostRegion
from vtemu.modes.bt import region
from vtemu.modes.bt.assemble import assemble
from vtemu.modes.bt.emit import SYSCALL, Callout, Fragment



def dispatch_source(mode: CodeMode) -> str:
    """The shared indirect-branch lookup: the guest's target in TARGET, its TC address from
    the hash table (guest address, TC address) by the low bits; a miss calls out. Flags are
    saved on the translator's stack; every guest register is as it was at the end."""
    window = region.window(mode)
    d = {name: f"{(window + offset) & 0xFFFF_FFFF_FFFF_FFFF:#x}" for name, offset in (
        ("target", region.TARGET), ("saved", region.SAVED_RSP), ("jump", region.JUMP),
        ("top", region.STACK_TOP), ("table", region.TABLE), ("table8", region.TABLE + 8),
        ("hits", region.LOOKUP_HITS))}
    if mode is CodeMode.BITS64:
        a, c, sp, w, pushf, popf = "rax", "rcx", "rsp", "qword", "pushfq", "popfq"
    else:
        a, c, sp, w, pushf, popf = "eax", "ecx", "esp", "dword", "pushfd", "popfd"
    return (f"mov {w} ptr [{d['saved']}], {sp}; mov {sp}, {d['top']}; {pushf}; push {a}; push {c}; "
            f"mov {a}, {w} ptr [{d['target']}]; mov ecx, eax; and ecx, {region.TABLE_ENTRIES - 1}; "
            f"shl ecx, 4; cmp {a}, {w} ptr [{c} + {d['table']}]; jne bt_miss; "
            f"mov {a}, {w} ptr [{c} + {d['table8']}]; mov {w} ptr [{d['jump']}], {a}; "
            f"inc dword ptr [{d['hits']}]; "
            f"pop {c}; pop {a}; {popf}; mov {sp}, {w} ptr [{d['saved']}]; jmp {w} ptr [{d['jump']}]; "
            f"bt_miss: pop {c}; pop {a}; {popf}; mov {sp}, {w} ptr [{d['saved']}]; syscall")


@dataclass
class TranslationCache:
    mode: CodeMode
    host: HostMemory
    window: HostRegion                      # host memory behind the 4 MiB window
    entries: dict[int, int] = field(default_factory=dict)       # guest address -> TC entry
    callouts: dict[int, Callout] = field(default_factory=dict)
    fragments: list[Fragment] = field(default_factory=list)
    guest_pages: set[int] = field(default_factory=set)           # host pages translated from
    linear_pages: dict[int, int] = field(default_factory=dict)   # their linear page -> host page
    superblock_heads: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.base = region.window(self.mode)
        self._point_tc: list[int] = []
        self._fragment_starts: list[int] = []
        self._point_guest: list[int | None] = []
        self.flush()

    # --- allocation --------------------------------------------------------------------------
    @property
    def next_free(self) -> int:
        return self._next

    @property
    def code_bytes(self) -> int:
        return self._next - (self.base + region.CODE)

    def has_room(self, size: int) -> bool:
        return self._next + size <= self.base + region.WINDOW_SIZE

    def install(self, fragment: Fragment) -> None:
        """Copy a fragment emitted at next_free into TC memory and index it."""
        assert fragment.tc_entry == self._next
        self._write(fragment.tc_entry, bytes(fragment.code))
        self._next = fragment.tc_end
        self.fragments.append(fragment)
        self._fragment_starts.append(fragment.tc_entry)     # ascending: code is allocated in order
        self.entries[fragment.guest_entry] = fragment.tc_entry
        self.callouts.update(fragment.callouts)
        for tc, guest in fragment.points:
            self._point_tc.append(tc)
            self._point_guest.append(guest)
        self.guest_pages |= fragment.guest_pages

    def flush(self) -> None:
        """Forget every translation (the caller also drops Unicorn's translated blocks)."""
        self.entries.clear()
        self.callouts.clear()
        self.fragments.clear()
        self._fragment_starts.clear()
        self.guest_pages.clear()
        self.linear_pages.clear()
        self.superblock_heads.clear()
        self._point_tc.clear()
        self._point_guest.clear()
        self._write(self.base + region.TABLE, bytes(16 * region.TABLE_ENTRIES))
        self._next = self.base + region.CODE
        self.dispatch = self._next
        code = assemble(self.mode, dispatch_source(self.mode), self.dispatch)
        self._write(self.dispatch, code)
        miss = self.dispatch + len(code) - 2
        self.callouts[miss] = Callout("dispatch")
        self._next += len(code)
        self._point_tc.append(self.dispatch)
        self._point_guest.append(None)
        self._point_tc.append(miss)
        self._point_guest.append(None)   # replaced when known: the miss's guest RIP is TARGET

    # --- what a TC address stands for --------------------------------------------------------
    def precise(self, tc: int) -> tuple[bool, int | None]:
        """(is a recorded instruction boundary, the guest RIP whose state it holds or None)."""
        index = bisect.bisect_right(self._point_tc, tc) - 1
        if index < 0 or self._point_tc[index] != tc:
            return False, None
        return True, self._point_guest[index]

    # --- invalidation ------------------------------------------------------------------------
    def poison(self, hpa_page: int) -> list[Fragment]:
        """Retire every fragment translated from `hpa_page`: each block start in it becomes a
        SYSCALL "stale" callout (so chained branches and internal jumps into it call out and
        reach a fresh translation), and nothing indexes it any more. The fragment's bytes stay
        where they are: code executing in it may finish its current block."""
        retired = [f for f in self.fragments if not f.stale and hpa_page in f.guest_pages]
        for fragment in retired:
            self._retire(fragment)
        self._forget_lookups(retired)
        self.guest_pages = set().union(*(f.guest_pages for f in self.fragments if not f.stale))
        self.linear_pages = {linear: hpa for linear, hpa in self.linear_pages.items()
                             if hpa in self.guest_pages}
        return retired

    def retire_at(self, tc: int) -> Fragment:
        """Retire the fragment holding TC address `tc` (its self-check failed)."""
        fragment = self.fragment_at(tc)
        self._retire(fragment)
        self._forget_lookups([fragment])
        return fragment

    def fragment_at(self, tc: int) -> Fragment:
        index = bisect.bisect_right(self._fragment_starts, tc) - 1
        fragment = self.fragments[index]
        assert fragment.tc_entry <= tc < fragment.tc_end
        return fragment

    def _retire(self, fragment: Fragment) -> None:
        fragment.stale = True
        for guest, tc in fragment.labels.items():
            self._write(tc, SYSCALL)
            self.callouts[tc] = Callout("stale", target=guest, resume=tc)
        if self.entries.get(fragment.guest_entry) == fragment.tc_entry:
            del self.entries[fragment.guest_entry]
        self.superblock_heads.discard(fragment.guest_entry)

    def _forget_lookups(self, fragments: list[Fragment]) -> None:
        """Clear the lookup-table slots that lead into `fragments` (one pass over the table)."""
        if not fragments:
            return
        table = self.hpa(self.base + region.TABLE)
        slots = struct.iter_unpack("<QQ", self.host.read(table, 16 * region.TABLE_ENTRIES))
        for slot, (_guest, tc) in enumerate(slots):
            if any(f.tc_entry <= tc < f.tc_end for f in fragments):
                self.host.write(table + 16 * slot, bytes(16))

    # --- lookup table ------------------------------------------------------------------------
    def remember(self, guest: int, tc: int) -> None:
        """Enter (guest, TC) in the inline lookup table the dispatch stub reads."""
        slot = self.base + region.TABLE + 16 * (guest & (region.TABLE_ENTRIES - 1))
        self._write(slot, struct.pack("<QQ", guest, tc))

    def patch_rel32(self, field_address: int, destination: int) -> None:
        self._write(field_address, struct.pack("<i", destination - (field_address + 4)))

    # --- data page -----------------------------------------------------------------------------
    def read_data(self, offset: int) -> int:
        return self.host.read_u64(self.window.hpa + offset)

    def write_data(self, offset: int, value: int) -> None:
        self.host.write_u64(self.window.hpa + offset, value & 0xFFFF_FFFF_FFFF_FFFF)

    def hpa(self, linear: int) -> int:
        return self.window.hpa + (linear - self.base)

    def _write(self, linear: int, data: bytes) -> None:
        self.host.write(self.hpa(linear), data)
