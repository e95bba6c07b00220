"""Extended page tables: guest-physical -> host-physical translation, and the hypervisor's tables for it.

Section numbers follow the Intel SDM Vol. 3C editions that place EPT at 28.2 (28.2.2 "EPT Translation
Mechanism" with Tables 28-1..28-6, 28.2.3.1 "EPT Misconfigurations", 28.2.3.2 "EPT Violations", 28.2.4
"Accessed and Dirty Flags for EPT"), the EPTP at 24.6.11, its VM-entry checks at 26.2.1.1 and the EPT-violation
exit qualification at Table 27-7. Newer editions insert HLAT as 28.2 and move EPT to 28.3 (and the whole chapter
to 29); the section titles are unchanged.

The model is a processor whose IA32_VMX_EPT_VPID_CAP reports: 4-level walks only, UC and WB paging-structure
memory types, 2 MiB and 1 GiB pages, accessed/dirty flags, and *no* execute-only translations (so R/W/X = 100b is
a misconfiguration, 28.2.3.1). Mode-based execute control, sub-page permissions, #VE and shadow-stack bits are
not modelled: the bits that carry them are ignored, as on a processor without the features.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from vtemu.machine.addr import GPA, GVA, HPA
from vtemu.machine.translation import SecondLevelFault
from vtemu.mmu._bits import bit_range
from vtemu.mmu.paging import Access, PageSize

_TABLE_ENTRIES = 512
_TABLE_BYTES = 4096
_GPA_WIDTH = 48  # a 4-level EPT walk translates guest-physical bits 47:0 (28.2.2)

# EPT entry bits (Tables 28-1..28-6).
_PERMS = 0x7  # bits 2:0 read, write, execute; 000b = not present
_R, _W, _X = 1, 2, 4  # plain ints for the hot path (IntFlag arithmetic costs a Python call per operation)
_MEMTYPE_SHIFT = 3  # bits 5:3 EPT memory type (leaf only)
_IPAT = 1 << 6  # ignore PAT (leaf only)
_PS = 1 << 7  # maps a page (PDPTE, PDE); reserved in a PML4E; ignored in a PTE
_ACCESSED = 1 << 8
_DIRTY = 1 << 9  # leaf only
_LEAF_ATTRIBUTES = _PERMS | (0x7 << _MEMTYPE_SHIFT) | _IPAT | _ACCESSED | _DIRTY  # what a split copies down
_MISCONFIGURED_PERMS = frozenset({0b010, 0b110, 0b100})  # write-only, write+execute, execute-only (28.2.3.1)
_INVALID_MEMORY_TYPES = frozenset({2, 3, 7})  # reserved EPT memory types in a leaf (28.2.3.1)

# EPTP fields (24.6.11, Table 24-8).
_EPTP_MEMTYPE = 0x7
_EPTP_WALK_SHIFT = 3
_EPTP_WALK_MASK = 0x7 << _EPTP_WALK_SHIFT
_EPTP_WALK_4 = 3 << _EPTP_WALK_SHIFT  # "page-walk length minus 1"
_EPTP_AD = 1 << 6


class EptPerm(enum.IntFlag):
    """Bits 2:0 of an EPT entry. The only combinations vtemu builds are R, RW, RX and RWX."""

    R = 1
    W = 2
    X = 4
    RW = 3
    RX = 5
    RWX = 7


class EptMemoryType(enum.IntEnum):
    """EPT memory types (28.2.6.1; 2, 3 and 7 are reserved). The EPTP itself allows only UC and WB."""

    UC = 0
    WC = 1
    WT = 4
    WP = 5
    WB = 6


class EptQual(enum.IntFlag):
    """Exit-qualification bits for EPT violations, SDM Table 27-7 (bits 0-8; the rest stay 0 in vtemu)."""

    READ = 1 << 0  # the access was a data read
    WRITE = 1 << 1  # the access was a data write
    FETCH = 1 << 2  # the access was an instruction fetch
    READABLE = 1 << 3  # AND of bit 0 over the EPT entries used (0 if one was not present)
    WRITABLE = 1 << 4  # AND of bit 1
    EXECUTABLE = 1 << 5  # AND of bit 2
    LINEAR_VALID = 1 << 7  # the guest linear-address field is valid
    LINEAR_TRANSLATION = 1 << 8  # (if bit 7) the access was to the translation of a linear address, not to a
    #                              guest paging-structure entry


_VALID_LEAF_PERMS = frozenset({EptPerm.R, EptPerm.RW, EptPerm.RX, EptPerm.RWX})


class InvalidEptp(ValueError):
    """An EPTP value that fails the VM-entry checks on the EPTP (SDM 26.2.1.1)."""


class EptViolation(SecondLevelFault):
    """An EPT violation VM exit: the guest-physical address, the qualification (Table 27-7) and, when bit 7 of
    the qualification is set, the guest linear address whose translation caused it."""

    def __init__(self, gpa: GPA, qualification: int, linear: GVA | None = None) -> None:
        super().__init__(gpa, int(qualification), linear)


class EptMisconfiguration(SecondLevelFault):
    """An EPT misconfiguration VM exit (28.2.3.1): only the guest-physical address is reported."""

    misconfiguration = True

    def __init__(self, gpa: GPA) -> None:
        super().__init__(gpa)


class HostMemory(Protocol):
    """Host-physical memory as the processor's page walker sees it: aligned 64-bit loads and stores."""

    def read_u64(self, hpa: HPA) -> int: ...

    def write_u64(self, hpa: HPA, value: int) -> None: ...


class TableAllocator(Protocol):
    """Where EPT paging structures come from: zeroed 4 KiB pages in memory the guest cannot reach."""

    def alloc_table_page(self) -> HPA: ...


@dataclass(frozen=True, slots=True)
class Eptp:
    """The extended-page-table pointer (24.6.11); only 4-level walks exist in vtemu."""

    pml4: HPA
    memory_type: EptMemoryType = EptMemoryType.WB
    accessed_dirty: bool = False

    def __post_init__(self) -> None:
        if self.pml4 % _TABLE_BYTES:
            raise ValueError(f"EPT PML4 table at {self.pml4:#x} is not 4 KiB aligned")

    def encode(self) -> int:
        return self.pml4 | _EPTP_WALK_4 | (_EPTP_AD if self.accessed_dirty else 0) | self.memory_type

    @classmethod
    def decode(cls, value: int, *, maxphyaddr: int = 40) -> Eptp:
        """Decode `value`, applying the VM-entry checks of 26.2.1.1 (vtemu's EPT capabilities in the docstring).

        Bit 7 (supervisor shadow-stack control) is reserved because vtemu has no CET.
        """
        memory_type = value & _EPTP_MEMTYPE
        if memory_type not in (EptMemoryType.UC, EptMemoryType.WB):
            raise InvalidEptp(f"EPTP memory type {memory_type} is neither UC (0) nor WB (6)")
        if value & _EPTP_WALK_MASK != _EPTP_WALK_4:
            raise InvalidEptp(f"EPTP page-walk length {((value & _EPTP_WALK_MASK) >> _EPTP_WALK_SHIFT) + 1} != 4")
        reserved = bit_range(11, 7) | bit_range(63, maxphyaddr)
        if value & reserved:
            raise InvalidEptp(f"EPTP reserved bits set: {value & reserved:#x}")
        return cls(HPA(value & bit_range(maxphyaddr - 1, 12)), EptMemoryType(memory_type), bool(value & _EPTP_AD))


@dataclass(frozen=True, slots=True)
class EptTranslation:
    """A completed EPT walk: the host-physical address of the accessed byte, the page it lies in, the rights
    granted by the AND of all levels (28.2.3.2), and how many EPT entries were read to find out."""

    hpa: HPA
    page_size: PageSize
    readable: bool
    writable: bool
    executable: bool
    references: int


@dataclass(frozen=True, slots=True)
class EptMapping:
    """What `EptTables.lookup` found: one leaf entry, decoded for diagnostics."""

    page_gpa: GPA
    page_hpa: HPA
    page_size: PageSize
    perms: EptPerm
    memory_type: EptMemoryType
    accessed: bool
    dirty: bool


@dataclass(frozen=True, slots=True)
class _Shape:
    address_mask: int
    reserved: int
    page_size: PageSize | None  # None: references another EPT paging structure


@dataclass(frozen=True, slots=True)
class _Level:
    """One EPT level; `table`/`page` as in the guest walker (a level with both chooses by bit 7)."""

    shift: int
    table: _Shape | None
    page: _Shape | None

    def shape(self, entry: int) -> _Shape:
        if self.page is not None and (self.table is None or entry & _PS):
            return self.page
        assert self.table is not None
        return self.table

    def next_table(self, entry: int) -> HPA:
        """The table a non-leaf `entry` of this level references."""
        assert self.table is not None
        return HPA(entry & self.table.address_mask)


@dataclass(frozen=True, slots=True)
class _Format:
    root_mask: int  # EPTP bits N-1:12, the PML4 address
    levels: tuple[_Level, ...]


@lru_cache(maxsize=None)
def _format(maxphyaddr: int) -> _Format:
    """The four EPT levels with their reserved bits (Tables 28-1..28-6; N = MAXPHYADDR).

    Every entry reserves bits 51:N. An entry referencing a table reserves 7:3 in the PML4E and 6:3 below
    (bit 7 = 0 is what makes it reference a table); a 1 GiB PDPTE reserves 29:12, a 2 MiB PDE 20:12.
    """
    if not 32 <= maxphyaddr <= 52:
        raise ValueError(f"MAXPHYADDR {maxphyaddr} outside 32..52")
    high = bit_range(51, maxphyaddr)
    frame = bit_range(maxphyaddr - 1, 12)
    table = _Shape(frame, high | bit_range(6, 3), None)
    return _Format(
        root_mask=frame,
        levels=(
            _Level(39, _Shape(frame, high | bit_range(7, 3), None), None),
            _Level(30, table, _Shape(bit_range(maxphyaddr - 1, 30), high | bit_range(29, 12), PageSize.SIZE_1G)),
            _Level(21, table, _Shape(bit_range(maxphyaddr - 1, 21), high | bit_range(20, 12), PageSize.SIZE_2M)),
            _Level(12, None, _Shape(frame, high, PageSize.SIZE_4K)),
        ),
    )


def _access_qualification(access: Access) -> int:
    """Bits 2:0 of the qualification: which kind of access it was (Table 27-7)."""
    if access.fetch:
        return EptQual.FETCH
    return EptQual.WRITE if access.write else EptQual.READ


def _required_perm(access: Access) -> int:
    if access.fetch:
        return _X
    return _W if access.write else _R


def ept_walk(eptp: int, gpa: GPA, access: Access, mem: HostMemory, *, maxphyaddr: int = 40) -> EptTranslation:
    """Translate `gpa` through the EPT rooted at `eptp` for `access` (28.2.2), or raise the VM exit it causes.

    Each entry is read, then: not present (R/W/X = 000b) -> EPT violation; misconfigured -> EPT
    misconfiguration (28.2.3.1); otherwise the walk continues or ends at a leaf. Only a completed walk checks
    the access against the AND of the rights of every level (28.2.3.2) and, when EPTP bit 6 is set, sets the
    accessed flag of every entry used and the dirty flag of the leaf for a write (28.2.4). Like the guest
    walker, a faulting walk writes nothing. `access.user` is ignored (no mode-based execute control).
    The EPTP is assumed to have passed `Eptp.decode` at VM entry; only the walk length is rechecked.
    """
    if eptp & _EPTP_WALK_MASK != _EPTP_WALK_4:
        raise InvalidEptp("EPTP page-walk length is not 4")
    fmt = _format(maxphyaddr)
    table = eptp & fmt.root_mask
    rights = _PERMS
    used: list[HPA] = []
    values: list[int] = []
    for level in fmt.levels:
        hpa = HPA(table + ((gpa >> level.shift) & 0x1FF) * 8)
        entry = mem.read_u64(hpa)
        used.append(hpa)
        values.append(entry)
        perms = entry & _PERMS
        if not perms:
            raise EptViolation(gpa, _access_qualification(access))  # the AND includes this all-zero entry
        shape = level.page if level.page is not None and (level.table is None or entry & _PS) else level.table
        assert shape is not None  # inlined _Level.shape: this loop runs on every TLB miss
        if perms in _MISCONFIGURED_PERMS or entry & shape.reserved:
            raise EptMisconfiguration(gpa)
        rights &= perms
        if shape.page_size is not None:
            if (entry >> _MEMTYPE_SHIFT) & 0x7 in _INVALID_MEMORY_TYPES:
                raise EptMisconfiguration(gpa)
            break
        table = entry & shape.address_mask
    if not rights & _required_perm(access):
        raise EptViolation(gpa, _access_qualification(access) | rights << 3)  # bits 5:3 mirror R/W/X
    if eptp & _EPTP_AD:
        _set_ept_accessed_dirty(used, values, access.write, mem)
    page_size = shape.page_size
    return EptTranslation(
        hpa=HPA((entry & shape.address_mask) | (gpa & (page_size - 1))),
        page_size=page_size,
        readable=bool(rights & _R),
        writable=bool(rights & _W),
        executable=bool(rights & _X),
        references=len(used),
    )


def _set_ept_accessed_dirty(used: list[HPA], values: list[int], write: bool, mem: HostMemory) -> None:
    """28.2.4: A in every EPT entry used, D in the leaf on a write; top-down, sticky (an entry whose flags are
    already set is not touched), each update a re-read and OR like the guest walker's (SDM Vol. 3A 4.8)."""
    last = len(used) - 1
    for i, hpa in enumerate(used):
        wanted = _ACCESSED | (_DIRTY if write and i == last else 0)
        if values[i] & wanted != wanted:
            mem.write_u64(hpa, mem.read_u64(hpa) | wanted)


class EptTables:
    """The hypervisor's EPT for one guest: real 64-bit entries in `host`, built from `allocator` pages.

    Mappings use the largest page (1 GiB, 2 MiB, 4 KiB) that the alignment of both addresses and the range
    allow. A map, unmap or protect that covers part of a large page first splits it into a table of the next
    size down carrying the same attributes; one that covers a whole table's range replaces the table with a
    large leaf (or nothing) and recycles the table's pages. The only Python-side state is the root and the
    free list of recycled table pages. Changing mappings does not invalidate cached translations: the caller
    flushes them, as software must with INVEPT (SDM 28.3.3 "Invalidating Cached Translation Information").
    """

    def __init__(
        self,
        host: HostMemory,
        allocator: TableAllocator,
        *,
        accessed_dirty: bool = False,
        maxphyaddr: int = 40,
    ) -> None:
        self._host = host
        self._allocator = allocator
        self._maxphyaddr = maxphyaddr
        self._levels = _format(maxphyaddr).levels
        self._free: list[HPA] = []
        self._root = self._alloc()
        self._eptp = Eptp(self._root, EptMemoryType.WB, accessed_dirty).encode()

    @property
    def eptp(self) -> int:
        """The value for the VMCS EPTP field: this root, WB paging-structure accesses, 4-level walks."""
        return self._eptp

    def map(
        self, gpa: GPA, hpa: HPA, size: int, perms: EptPerm, memory_type: EptMemoryType = EptMemoryType.WB
    ) -> None:
        """Map [gpa, gpa+size) to [hpa, hpa+size), replacing whatever was there."""
        self._check_range(gpa, size)
        if hpa % _TABLE_BYTES or hpa + size > 1 << self._maxphyaddr:
            raise ValueError(f"host range {hpa:#x}+{size:#x} is unaligned or beyond MAXPHYADDR")
        self._check_perms(perms)
        memory_type = EptMemoryType(memory_type)
        leaf_bits = int(perms) | memory_type << _MEMTYPE_SHIFT

        def visit(slot: HPA, depth: int, base: int, entry: int, lo: int, hi: int) -> None:
            span = 1 << self._levels[depth].shift
            target = hpa + (base - gpa)
            if lo == base and hi == base + span and self._levels[depth].page is not None and not target % span:
                self._release_if_table(entry, depth)
                self._host.write_u64(slot, target | leaf_bits | (_PS if depth < 3 else 0))
                return
            self._walk_range(self._child(slot, depth, entry), depth + 1, lo, hi, visit)

        self._walk_range(self._root, 0, gpa, gpa + size, visit)

    def unmap(self, gpa: GPA, size: int) -> None:
        """Make [gpa, gpa+size) not present; holes in the range are fine."""
        self._check_range(gpa, size)

        def visit(slot: HPA, depth: int, base: int, entry: int, lo: int, hi: int) -> None:
            if not entry:
                return
            if lo == base and hi == base + (1 << self._levels[depth].shift):
                self._release_if_table(entry, depth)
                self._host.write_u64(slot, 0)
                return
            self._walk_range(self._child(slot, depth, entry), depth + 1, lo, hi, visit)

        self._walk_range(self._root, 0, gpa, gpa + size, visit)

    def protect(self, gpa: GPA, size: int, perms: EptPerm) -> None:
        """Change the rights of the mapped pages in [gpa, gpa+size), keeping addresses and memory types.

        Unmapped holes stay unmapped. Revoking everything is `unmap`: an entry with R/W/X = 000b is not present
        anyway (28.2.2), and keeping such half-entries around would only confuse `lookup`.
        """
        self._check_range(gpa, size)
        self._check_perms(perms)

        def visit(slot: HPA, depth: int, base: int, entry: int, lo: int, hi: int) -> None:
            if not entry:
                return
            if self._is_leaf(entry, depth):
                if entry & _PERMS == perms:
                    return
                if lo == base and hi == base + (1 << self._levels[depth].shift):
                    self._host.write_u64(slot, (entry & ~_PERMS) | perms)
                    return
            self._walk_range(self._child(slot, depth, entry), depth + 1, lo, hi, visit)

        self._walk_range(self._root, 0, gpa, gpa + size, visit)

    def lookup(self, gpa: GPA) -> EptMapping | None:
        """The leaf mapping `gpa`, or None; reads entries without checking or touching them (diagnostics)."""
        table = self._root
        for depth, level in enumerate(self._levels):
            entry = self._host.read_u64(HPA(table + ((gpa >> level.shift) & 0x1FF) * 8))
            if not entry & _PERMS:
                return None
            shape = level.shape(entry)
            if shape.page_size is not None:
                return EptMapping(
                    page_gpa=GPA(gpa & ~(shape.page_size - 1)),
                    page_hpa=HPA(entry & shape.address_mask),
                    page_size=shape.page_size,
                    perms=EptPerm(entry & _PERMS),
                    memory_type=EptMemoryType((entry >> _MEMTYPE_SHIFT) & 0x7),
                    accessed=bool(entry & _ACCESSED),
                    dirty=bool(entry & _DIRTY),
                )
            table = entry & shape.address_mask
        raise AssertionError("EPT walk ran past the PTE level")  # pragma: no cover

    # -- building blocks -------------------------------------------------------------------------------

    def _check_range(self, gpa: int, size: int) -> None:
        if size <= 0 or gpa % _TABLE_BYTES or size % _TABLE_BYTES or gpa + size > 1 << _GPA_WIDTH:
            raise ValueError(f"guest range {gpa:#x}+{size:#x} is empty, unaligned or beyond 48 bits")

    @staticmethod
    def _check_perms(perms: EptPerm) -> None:
        if perms not in _VALID_LEAF_PERMS:
            raise ValueError(f"EPT rights {perms!r} would be a misconfiguration or not present (28.2.3.1)")

    def _is_leaf(self, entry: int, depth: int) -> bool:
        return self._levels[depth].shape(entry).page_size is not None

    def _walk_range(self, table: HPA, depth: int, lo: int, hi: int, visit: _Visitor) -> None:
        """Call `visit` for each entry of `table` that [lo, hi) overlaps, with the overlap clipped to it."""
        shift = self._levels[depth].shift
        span = 1 << shift
        base = lo & ~(span - 1)
        while base < hi:
            slot = HPA(table + ((base >> shift) & 0x1FF) * 8)
            visit(slot, depth, base, self._host.read_u64(slot), max(lo, base), min(hi, base + span))
            base += span

    def _child(self, slot: HPA, depth: int, entry: int) -> HPA:
        """The table below `slot`, creating it when absent and splitting the large page when it is a leaf.

        The new table is filled before the entry points to it, so a concurrent walk sees old or new, never half.
        """
        if entry and not self._is_leaf(entry, depth):
            return self._levels[depth].next_table(entry)
        table = self._alloc()
        if entry:
            self._split_into(table, entry, depth)
        self._host.write_u64(slot, table | EptPerm.RWX)  # rights are decided at the leaves
        return table

    def _split_into(self, table: HPA, entry: int, depth: int) -> None:
        """Fill `table` with 512 leaves of the next size that together map what the large leaf `entry` did."""
        shape = self._levels[depth].shape(entry)
        child_span = 1 << self._levels[depth + 1].shift
        attributes = (entry & _LEAF_ATTRIBUTES) | (_PS if depth + 1 < 3 else 0)
        page = entry & shape.address_mask
        for i in range(_TABLE_ENTRIES):
            self._host.write_u64(HPA(table + i * 8), (page + i * child_span) | attributes)

    def _release_if_table(self, entry: int, depth: int) -> None:
        """Recycle the subtree under `entry` if it references a table (before the entry is overwritten)."""
        if entry and not self._is_leaf(entry, depth):
            self._release(self._levels[depth].next_table(entry), depth + 1)

    def _release(self, table: HPA, depth: int) -> None:
        """Zero `table` (recursively releasing its subtables) and put it on the free list for `_alloc`."""
        for i in range(_TABLE_ENTRIES):
            slot = HPA(table + i * 8)
            entry = self._host.read_u64(slot)
            if entry:
                self._release_if_table(entry, depth)
                self._host.write_u64(slot, 0)
        self._free.append(table)

    def _alloc(self) -> HPA:
        """A zeroed table page: recycled ones are zeroed by `_release`, new ones by the allocator's contract."""
        return self._free.pop() if self._free else self._allocator.alloc_table_page()


class _Visitor(Protocol):
    def __call__(self, slot: HPA, depth: int, base: int, entry: int, lo: int, hi: int) -> None: ...
