"""The guest page walk: linear address -> guest-physical address, as the processor's paging unit does it.

Everything here follows Intel SDM Vol. 3A chapter 4 ("Paging"); section numbers are those of that chapter
(4.3 32-bit paging, 4.4 PAE paging, 4.5 4-level paging, 4.6 access rights, 4.7 page-fault exceptions,
4.8 accessed and dirty flags).

The walk is a pure function of the paging registers and of what `EntryMemory` returns, so the same code serves
nested paging (each entry's GPA goes through EPT first, and may raise an EPT exit from inside `read_entry`),
shadow paging (entries read straight from guest RAM) and debuggers (`set_accessed_dirty=False`).

Not modelled, on purpose (vtemu's CPUID does not advertise them, so a guest has no business enabling them):
SMEP, SMAP, protection keys (CR4.PKE/PKS), CET shadow stacks, 5-level paging (CR4.LA57), HLAT. If a guest sets
the CR4 bits anyway, the walk ignores SMEP/SMAP/PKE and refuses LA57 with `UnsupportedPagingMode`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from vtemu.machine.addr import GPA, GVA
from vtemu.machine.translation import GuestPageFault, PagingRegs
from vtemu.mmu._bits import bit_range

# Control-register and EFER bits the walk depends on (SDM Vol. 3A 2.5 "Control Registers", 2.2.1 "IA32_EFER").
CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_PGE = 1 << 7
CR4_LA57 = 1 << 12
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11

# Paging-structure entry bits common to all modes (SDM 4.3 Tables 4-4..4-6, 4.4 Tables 4-8..4-11,
# 4.5 Tables 4-14..4-19).
_P = 1 << 0
_RW = 1 << 1
_US = 1 << 2
_A = 1 << 5
_D = 1 << 6
_PS = 1 << 7
_G = 1 << 8
_XD = 1 << 63

_MAXPHYADDR_RANGE = range(32, 53)  # SDM 4.1.4: MAXPHYADDR is at most 52.


class PagingMode(enum.Enum):
    """SDM 4.1.1 "Four Paging Modes" (five-level paging is not supported)."""

    NONE = "none"
    BITS32 = "32-bit"
    PAE = "PAE"
    LEVEL4 = "4-level"


class PageSize(enum.IntEnum):
    SIZE_4K = 1 << 12
    SIZE_2M = 1 << 21
    SIZE_4M = 1 << 22
    SIZE_1G = 1 << 30


class PFErr(enum.IntFlag):
    """#PF error code bits, SDM 4.7 "Page-Fault Exceptions" (Figure 4-12)."""

    P = 1 << 0  # 0: not-present page; 1: protection violation or reserved bit
    W = 1 << 1  # the access was a write
    U = 1 << 2  # the access was a user-mode access
    RSVD = 1 << 3  # a reserved bit was set in some paging-structure entry
    ID = 1 << 4  # instruction fetch (only with PAE/4-level paging and IA32_EFER.NXE=1 here; no SMEP)


class UnsupportedPagingMode(ValueError):
    """The guest enabled a paging mode vtemu does not implement (5-level paging)."""


class PageFault(GuestPageFault):
    """The walk ended in #PF: `linear` goes to CR2, `error_code` is pushed by delivery (SDM 4.7)."""

    def __init__(self, linear: GVA, error_code: int) -> None:
        super().__init__(linear, int(error_code))


@dataclass(frozen=True, slots=True)
class Access:
    """What the access is, not what the page allows: the three inputs to SDM 4.6 and to the #PF error code.

    `user` means CPL 3 (an explicit user-mode access, SDM 4.6); implicit supervisor accesses (GDT, IDT, TSS)
    are supervisor accesses whatever the CPL.
    """

    write: bool = False
    user: bool = False
    fetch: bool = False

    def __post_init__(self) -> None:
        if self.write and self.fetch:
            raise ValueError("an access is a data write or an instruction fetch, not both")


class EntryMemory(Protocol):
    """How the walker reaches paging-structure entries; the caller decides how a GPA reaches memory.

    `size` is 4 (32-bit paging) or 8. `write_entry` is only ever used to set accessed/dirty flags, right after
    re-reading the entry (SDM 4.8 updates are locked read-modify-writes of that one entry).
    """

    def read_entry(self, gpa: GPA, size: int) -> int: ...

    def write_entry(self, gpa: GPA, size: int, value: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Translation:
    """The result of a successful walk.

    The permissions are those the translation grants to an access of the same privilege (user or supervisor)
    as the one walked, so a TLB fill can install them. A caller that installs `writable` for a read must keep
    in mind that the leaf's dirty flag is set only by a write walk (SDM 4.8): grant write only if `dirty`, or
    a later write would skip setting D.
    """

    gpa: GPA
    page_base_gpa: GPA
    page_size: PageSize
    readable: bool
    writable: bool
    executable: bool
    dirty: bool
    global_page: bool
    entries: tuple[GPA, ...]  # every paging-structure entry read, in walk order
    # The combined rights over the levels, whatever the access walked (SDM 4.6.1): what a shadow
    # entry must carry to grant exactly what the guest's tables grant.
    user_page: bool = True      # U/S = 1 at every level
    all_writable: bool = True   # R/W = 1 at every level
    no_execute: bool = False    # XD = 1 at some level, with XD in force


@dataclass(frozen=True, slots=True)
class _Shape:
    """How to read one kind of entry: what its address bits are, what is reserved, what it maps.

    `pse36_mask` selects the PSE-36 address bits 20:13 of a 32-bit 4 MiB PDE (physical bits 39:32, SDM 4.3
    Table 4-4); it is 0 for every other kind of entry.
    """

    address_mask: int
    reserved: int
    page_size: PageSize | None  # None: the entry references another paging structure
    pse36_mask: int = 0


@dataclass(frozen=True, slots=True)
class _Level:
    """One level of a paging-structure hierarchy.

    `table` describes the entry when it references a table, `page` when it maps a page; a level with only one
    of them has no choice, a level with both chooses by the PS flag (bit 7). `rights` is false for PAE PDPTEs,
    which carry no R/W, U/S or XD (SDM 4.4.2, 4.6), and `accessed` is false for them too (bits 8:5 reserved).
    """

    shift: int
    index_mask: int
    entry_size: int
    table: _Shape | None
    page: _Shape | None
    rights: bool = True
    accessed: bool = True


@dataclass(frozen=True, slots=True)
class _Format:
    cr3_mask: int
    linear_mask: int
    nx: bool  # XD is a permission (PAE/4-level with NXE=1): it also turns on the I/D error-code bit
    levels: tuple[_Level, ...]


def paging_mode(regs: PagingRegs) -> PagingMode:
    """SDM 4.1.1: CR0.PG, CR4.PAE and IA32_EFER.LMA select the mode (LMA=1 implies PG=1 and PAE=1)."""
    if not regs.cr0 & CR0_PG:
        return PagingMode.NONE
    if regs.efer & EFER_LMA:
        if regs.cr4 & CR4_LA57:
            raise UnsupportedPagingMode("5-level paging (CR4.LA57=1) is not supported")
        return PagingMode.LEVEL4
    return PagingMode.PAE if regs.cr4 & CR4_PAE else PagingMode.BITS32


@lru_cache(maxsize=None)
def _format(mode: PagingMode, maxphyaddr: int, nxe: bool, pse: bool) -> _Format:
    """Build the level descriptors once per (mode, MAXPHYADDR, NXE, PSE): the walk itself only masks."""
    if maxphyaddr not in _MAXPHYADDR_RANGE:
        raise ValueError(f"MAXPHYADDR {maxphyaddr} outside 32..52 (SDM 4.1.4)")
    if mode is PagingMode.BITS32:
        return _format_32bit(maxphyaddr, pse)
    if mode is PagingMode.PAE:
        return _format_pae(maxphyaddr, nxe)
    if mode is PagingMode.LEVEL4:
        return _format_4level(maxphyaddr, nxe)
    raise ValueError(f"no paging structures in mode {mode}")


def _format_32bit(maxphyaddr: int, pse: bool) -> _Format:
    """SDM 4.3: two levels of 4-byte entries; physical addresses are 32 bits except in PSE-36 4 MiB pages.

    With CR4.PSE=0 the PS flag of a PDE is ignored and every PDE references a page table (Table 4-5), so the
    PD level then has no `page` shape. The 4 MiB PDE (Table 4-4) holds physical bits (M-1):32 in bits
    (M-20):13 and reserves bits 21:(M-19), where M = min(MAXPHYADDR, 40). No other 32-bit entry has reserved
    bits, and there is no XD bit.
    """
    m = min(maxphyaddr, 40)
    frame = bit_range(31, 12)
    large = _Shape(
        address_mask=bit_range(31, 22),
        reserved=bit_range(21, m - 19),
        page_size=PageSize.SIZE_4M,
        pse36_mask=bit_range(m - 33, 0),
    )
    pd = _Level(22, 0x3FF, 4, table=_Shape(frame, 0, None), page=large if pse else None)
    pt = _Level(12, 0x3FF, 4, table=None, page=_Shape(frame, 0, PageSize.SIZE_4K))
    return _Format(cr3_mask=frame, linear_mask=0xFFFF_FFFF, nx=False, levels=(pd, pt))


def _format_pae(maxphyaddr: int, nxe: bool) -> _Format:
    """SDM 4.4: CR3 bits 31:5 locate four PDPTEs; PDEs and PTEs are 8 bytes and reserve bits 62:M.

    PDPTEs (Table 4-8) reserve bits 2:1, 8:5 and 63:M (so bit 63 is reserved whatever NXE says) and have no
    access-rights or accessed bits. Bit 63 of PDEs/PTEs is XD with NXE=1 and reserved with NXE=0 (4.4.2).
    A 2 MiB PDE (Table 4-11) also reserves bits 20:13 (bit 12 is PAT).
    """
    frame = bit_range(maxphyaddr - 1, 12)
    reserved = bit_range(62, maxphyaddr) | (0 if nxe else _XD)
    pdpte = _Level(
        30, 0x3, 8,
        table=_Shape(frame, bit_range(2, 1) | bit_range(8, 5) | bit_range(63, maxphyaddr), None),
        page=None, rights=False, accessed=False,
    )
    pd = _Level(
        21, 0x1FF, 8,
        table=_Shape(frame, reserved, None),
        page=_Shape(bit_range(maxphyaddr - 1, 21), reserved | bit_range(20, 13), PageSize.SIZE_2M),
    )
    pt = _Level(12, 0x1FF, 8, table=None, page=_Shape(frame, reserved, PageSize.SIZE_4K))
    return _Format(cr3_mask=bit_range(31, 5), linear_mask=0xFFFF_FFFF, nx=nxe, levels=(pdpte, pd, pt))


def _format_4level(maxphyaddr: int, nxe: bool) -> _Format:
    """SDM 4.5: four levels of 8-byte entries; every entry reserves bits 51:M (bits 62:52 are ignored).

    PS is reserved in a PML4E (Table 4-15); a 1 GiB PDPTE reserves bits 29:13 (Table 4-16), a 2 MiB PDE bits
    20:13 (Table 4-18); bit 12 of both is PAT. Bit 63 is XD with NXE=1 and reserved with NXE=0.
    1 GiB pages are always available (vtemu's CPUID reports CPUID.80000001H:EDX.Page1GB[26] = 1).
    """
    frame = bit_range(maxphyaddr - 1, 12)
    reserved = bit_range(51, maxphyaddr) | (0 if nxe else _XD)
    table = _Shape(frame, reserved, None)
    pml4 = _Level(39, 0x1FF, 8, table=_Shape(frame, reserved | _PS, None), page=None)
    pdpt = _Level(
        30, 0x1FF, 8,
        table=table,
        page=_Shape(bit_range(maxphyaddr - 1, 30), reserved | bit_range(29, 13), PageSize.SIZE_1G),
    )
    pd = _Level(
        21, 0x1FF, 8,
        table=table,
        page=_Shape(bit_range(maxphyaddr - 1, 21), reserved | bit_range(20, 13), PageSize.SIZE_2M),
    )
    pt = _Level(12, 0x1FF, 8, table=None, page=_Shape(frame, reserved, PageSize.SIZE_4K))
    return _Format(cr3_mask=frame, linear_mask=bit_range(47, 0), nx=nxe, levels=(pml4, pdpt, pd, pt))


def _unpaged(linear: GVA) -> Translation:
    """CR0.PG=0: linear addresses are physical addresses (SDM 4.1.1) and nothing restricts access.

    `dirty` is reported true because there is no dirty flag to maintain: a cached writable translation is safe.
    """
    gpa = linear & 0xFFFF_FFFF
    return Translation(
        gpa=GPA(gpa), page_base_gpa=GPA(gpa & ~0xFFF), page_size=PageSize.SIZE_4K,
        readable=True, writable=True, executable=True, dirty=True, global_page=False, entries=(),
    )


def _access_error_bits(access: Access, nx: bool) -> int:
    """The error-code bits that describe the access itself (SDM 4.7): W/R, U/S and, where defined, I/D."""
    return (
        (PFErr.W if access.write else 0)
        | (PFErr.U if access.user else 0)
        | (PFErr.ID if access.fetch and nx else 0)
    )


def walk(
    regs: PagingRegs,
    linear: GVA,
    access: Access,
    mem: EntryMemory,
    *,
    maxphyaddr: int = 40,
    set_accessed_dirty: bool = True,
) -> Translation:
    """Translate `linear` for `access` as SDM 4.3-4.8 describe, or raise `PageFault`.

    The order is the hardware's: each entry is read, checked for P and then for reserved bits (so a
    not-present entry hides reserved bits below it); access rights are checked once the walk has reached the
    page (SDM 4.6), and only then are accessed/dirty flags set (SDM 4.8).

    Simplifications, documented because they differ from silicon:
    - PAE PDPTEs are read from memory at every walk rather than from the PDPTE registers loaded at MOV to CR3
      (SDM 4.4.1). A present PDPTE with a reserved bit set makes MOV to CR3 raise #GP on hardware; here it
      makes the walk raise #PF with P=1 and RSVD=1.
    - A faulting walk modifies no entry. The SDM (4.8) does not say whether accessed flags of the upper levels
      are set when a lower level faults; QEMU sets them as it goes, vtemu leaves a faulting walk a pure read.
    - In 4-level mode `linear` must be canonical: a non-canonical address is #GP (or #SS) before paging is
      consulted (SDM Vol. 1 3.3.7.1), so it is a caller bug here (ValueError).
    """
    mode = paging_mode(regs)
    if mode is PagingMode.NONE:
        return _unpaged(linear)
    if mode is PagingMode.LEVEL4:
        _check_canonical(linear)
    fmt = _format(
        mode, maxphyaddr, mode is not PagingMode.BITS32 and bool(regs.efer & EFER_NXE), bool(regs.cr4 & CR4_PSE)
    )
    address = linear & fmt.linear_mask
    table = regs.cr3 & fmt.cr3_mask
    gpas: list[GPA] = []
    values: list[int] = []
    rights = _RW | _US  # AND of R/W and U/S over the entries that control access rights
    xd = 0  # OR of XD over the same entries
    for level in fmt.levels:
        gpa = GPA(table + ((address >> level.shift) & level.index_mask) * level.entry_size)
        entry = mem.read_entry(gpa, level.entry_size)
        gpas.append(gpa)
        values.append(entry)
        if not entry & _P:
            raise PageFault(linear, _access_error_bits(access, fmt.nx))
        shape = level.page if level.page is not None and (level.table is None or entry & _PS) else level.table
        assert shape is not None
        if entry & shape.reserved:
            raise PageFault(linear, _access_error_bits(access, fmt.nx) | PFErr.P | PFErr.RSVD)
        if level.rights:
            rights &= entry
            xd |= entry & _XD
        if shape.page_size is not None:
            break
        table = entry & shape.address_mask
    else:  # pragma: no cover - the last level of every format maps a page
        raise AssertionError("walk ran past the last level")

    readable, writable, executable = _permissions(regs, access, rights, fmt.nx and bool(xd))
    if not (readable and (writable or not access.write) and (executable or not access.fetch)):
        raise PageFault(linear, _access_error_bits(access, fmt.nx) | PFErr.P)

    if set_accessed_dirty:
        _set_accessed_dirty(fmt.levels, gpas, values, access.write, mem)
    page_size = shape.page_size
    base = (entry & shape.address_mask) | (((entry >> 13) & shape.pse36_mask) << 32)
    return Translation(
        gpa=GPA(base | (address & (page_size - 1))),
        page_base_gpa=GPA(base),
        page_size=page_size,
        readable=readable,
        writable=writable,
        executable=executable,
        dirty=bool(entry & _D) or (access.write and set_accessed_dirty),
        global_page=bool(entry & _G) and bool(regs.cr4 & CR4_PGE),
        entries=tuple(gpas),
        user_page=bool(rights & _US),
        all_writable=bool(rights & _RW),
        no_execute=fmt.nx and bool(xd),
    )


def _check_canonical(linear: int) -> None:
    """SDM Vol. 1 3.3.7.1: bits 63:47 must all equal bit 47 (4-level paging)."""
    top = linear >> 47
    if top not in (0, (1 << 17) - 1):
        raise ValueError(f"non-canonical linear address {linear:#x}: #GP, not a paging event")


def _permissions(regs: PagingRegs, access: Access, rights: int, xd: bool) -> tuple[bool, bool, bool]:
    """SDM 4.6.1: what the translation allows an access of this privilege (read, write, fetch).

    A user-mode address has U/S=1 at every level. User accesses need a user-mode address, and writes also
    R/W=1 at every level. Supervisor reads are always allowed; supervisor writes need R/W=1 at every level
    only when CR0.WP=1. Fetches at either privilege need XD=0 at every level when XD is in force
    (PAE/4-level with NXE=1). No SMEP/SMAP (see module docstring).
    """
    all_writable = bool(rights & _RW)
    if access.user:
        user_page = bool(rights & _US)
        return user_page, user_page and all_writable, user_page and not xd
    return True, all_writable or not regs.cr0 & CR0_WP, not xd


def _set_accessed_dirty(
    levels: tuple[_Level, ...], gpas: list[GPA], values: list[int], write: bool, mem: EntryMemory
) -> None:
    """SDM 4.8: set A in every entry used (top-down) and, for a write, D in the entry that maps the page.

    Each update re-reads the entry and ORs the flags into its current value, the closest `EntryMemory` gets to
    the processor's locked read-modify-write; entries whose flags are already set are not touched (the flags
    are sticky, and an untouched entry costs nothing). PAE PDPTEs have no A flag.
    """
    last = len(gpas) - 1
    for i, gpa in enumerate(gpas):
        level = levels[i]
        if not level.accessed:
            continue
        wanted = _A | (_D if write and i == last else 0)
        if values[i] & wanted != wanted:
            current = mem.read_entry(gpa, level.entry_size)
            mem.write_entry(gpa, level.entry_size, current | wanted)
