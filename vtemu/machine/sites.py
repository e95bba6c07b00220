"""Finding the sensitive instructions a guest is about to execute, before Unicorn translates them.

Unicorn can hook IN, OUT, CPUID and RDTSC directly, but not RDMSR, MOV CR, INVLPG, LGDT and
the other instructions VT-x may turn into exits. Those need a code hook on their exact
address, and a code hook only affects blocks translated after it exists. The one callback
Unicorn gives before translating code is the TLB fill for an instruction fetch, once per
page: at that moment vtemu scans the page for candidate sensitive instructions and plants a
one-address code hook on each. Scanning is a superset: every byte offset whose bytes decode
(after optional prefixes) to a sensitive instruction becomes a site, because any offset may
be a branch target. A site at an offset that is never an instruction start is never hit.

Pages scanned for code lose write permission in the vCPU's TLB (W^X); a guest write to one
bumps its generation, so the next fetch from it rescans (self-modifying and reloaded code).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable

import capstone.x86_const as C

from vtemu.machine.decode import CodeMode, Decoder, Instruction, MAX_INSN_LENGTH


class SiteKind(Enum):
    """Instruction classes that may need to leave the guest (SDM Vol. 3C 25.1.3)."""

    DESCRIPTOR_TABLE = "lgdt/lidt/sgdt/sidt"
    LDTR_TR = "lldt/ltr/sldt/str"
    SMSW = "smsw"
    LMSW = "lmsw"
    CLTS = "clts"
    MOV_CR = "mov cr"
    MOV_DR = "mov dr"
    INVLPG = "invlpg"
    RDMSR = "rdmsr"
    WRMSR = "wrmsr"
    RDPMC = "rdpmc"
    INVD = "invd"
    WBINVD = "wbinvd"
    XSETBV = "xsetbv"
    MONITOR = "monitor"
    MWAIT = "mwait"
    PAUSE = "pause"
    SYSCALL = "syscall"
    SYSENTER = "sysenter"
    IO = "in/out"
    STRING_IO = "ins/outs"
    CPUID = "cpuid"
    RDTSC = "rdtsc"
    RDTSCP = "rdtscp"
    VMX = "vmcall/vmlaunch/..."


_BY_INSN_ID: dict[int, SiteKind] = {
    C.X86_INS_SGDT: SiteKind.DESCRIPTOR_TABLE, C.X86_INS_SIDT: SiteKind.DESCRIPTOR_TABLE,
    C.X86_INS_LGDT: SiteKind.DESCRIPTOR_TABLE, C.X86_INS_LIDT: SiteKind.DESCRIPTOR_TABLE,
    C.X86_INS_SLDT: SiteKind.LDTR_TR, C.X86_INS_STR: SiteKind.LDTR_TR,
    C.X86_INS_LLDT: SiteKind.LDTR_TR, C.X86_INS_LTR: SiteKind.LDTR_TR,
    C.X86_INS_SMSW: SiteKind.SMSW, C.X86_INS_LMSW: SiteKind.LMSW, C.X86_INS_CLTS: SiteKind.CLTS,
    C.X86_INS_INVLPG: SiteKind.INVLPG, C.X86_INS_RDMSR: SiteKind.RDMSR,
    C.X86_INS_WRMSR: SiteKind.WRMSR, C.X86_INS_RDPMC: SiteKind.RDPMC,
    C.X86_INS_INVD: SiteKind.INVD, C.X86_INS_WBINVD: SiteKind.WBINVD,
    C.X86_INS_XSETBV: SiteKind.XSETBV, C.X86_INS_MONITOR: SiteKind.MONITOR,
    C.X86_INS_MWAIT: SiteKind.MWAIT, C.X86_INS_PAUSE: SiteKind.PAUSE,
    C.X86_INS_SYSCALL: SiteKind.SYSCALL, C.X86_INS_SYSENTER: SiteKind.SYSENTER,
    C.X86_INS_IN: SiteKind.IO, C.X86_INS_OUT: SiteKind.IO,
    C.X86_INS_INSB: SiteKind.STRING_IO, C.X86_INS_INSW: SiteKind.STRING_IO,
    C.X86_INS_INSD: SiteKind.STRING_IO, C.X86_INS_OUTSB: SiteKind.STRING_IO,
    C.X86_INS_OUTSW: SiteKind.STRING_IO, C.X86_INS_OUTSD: SiteKind.STRING_IO,
    C.X86_INS_CPUID: SiteKind.CPUID, C.X86_INS_RDTSC: SiteKind.RDTSC,
    C.X86_INS_RDTSCP: SiteKind.RDTSCP,
    **{getattr(C, f"X86_INS_{name}"): SiteKind.VMX for name in (
        "VMCALL", "VMCLEAR", "VMLAUNCH", "VMPTRLD", "VMPTRST", "VMREAD", "VMRESUME", "VMWRITE",
        "VMXOFF", "VMXON", "INVEPT", "INVVPID", "VMFUNC")},
}

# Opcode bytes (after prefixes) of every instruction above: 0F 00 / 0F 01 groups 6 and 7,
# CLTS, INVD, WBINVD, MOV CR/DR, WRMSR, RDTSC, RDMSR, RDPMC, SYSCALL, SYSENTER, VMREAD/VMWRITE
# (0F 78/79), CPUID, VMPTRLD/VMCLEAR/VMXON/VMPTRST (0F C7), INVEPT/INVVPID (66 0F 38 80/81),
# PAUSE (F3 90), and the one-byte port I/O opcodes IN/OUT (E4-E7, EC-EF) and INS/OUTS (6C-6F).
_OPCODES = re.compile(rb"(?=(\x0f[\x00\x01\x05\x06\x08\x09\x20-\x23\x30-\x34\x78\x79\xa2\xc7]|\xf3\x90"
                      rb"|\x0f\x38[\x80\x81]"
                      rb"|[\xe4-\xe7\xec-\xef\x6c-\x6f]))")

_PREFIX_BYTES = frozenset(b"\x26\x2e\x36\x3e\x64\x65\x66\x67\xf0\xf2\xf3" + bytes(range(0x40, 0x50)))


@dataclass(frozen=True)
class Site:
    """A guest-linear address whose bytes decode to a sensitive instruction in some mode."""

    address: int
    kind: SiteKind
    raw: bytes


def classify(insn: Instruction) -> SiteKind | None:
    """Which sensitive class an instruction belongs to, if any."""
    kind = _BY_INSN_ID.get(insn.id)
    if kind is not None:
        return kind
    if insn.id == C.X86_INS_MOV:
        return _mov_kind(insn)
    return None


_CR_NAMES = frozenset(f"cr{n}" for n in range(16))
_DR_NAMES = frozenset(f"dr{n}" for n in range(16))


def _mov_kind(insn: Instruction) -> SiteKind | None:
    operands = {operand.strip() for operand in insn.op_str.split(",")}
    if operands & _CR_NAMES:
        return SiteKind.MOV_CR
    if operands & _DR_NAMES:
        return SiteKind.MOV_DR
    return None


def candidate_offsets(code: bytes, limit: int) -> list[int]:
    """Offsets in code[:limit] where a sensitive opcode, possibly behind prefixes, could start."""
    starts: set[int] = set()
    for match in _OPCODES.finditer(code):
        opcode_at = match.start()
        start = opcode_at
        while True:
            if start < limit:
                starts.add(start)
            if start == 0 or opcode_at - start >= MAX_INSN_LENGTH - 2:
                break
            if code[start - 1] not in _PREFIX_BYTES:
                break
            start -= 1
    return sorted(starts)


def scan(code: bytes, base: int, limit: int, decoder: Decoder,
         kinds: frozenset[SiteKind]) -> tuple[Site, ...]:
    """Sites among the first `limit` bytes of `code` (which may extend into the next page)."""
    sites = []
    for offset in candidate_offsets(code, limit):
        window = code[offset:offset + MAX_INSN_LENGTH]
        for mode in CodeMode:
            insn = decoder.decode(window, base + offset, mode)
            kind = classify(insn) if insn is not None else None
            if kind in kinds:
                sites.append(Site(base + offset, kind, window))  # type: ignore[arg-type]
                break
    return tuple(sites)


@dataclass
class _PageScan:
    hpa_page: int
    generation: int
    sites: tuple[Site, ...]


class SiteRegistry:
    """Per guest-virtual page, the sites found at the last scan, and their code hooks."""

    def __init__(self, decoder: Decoder, add_hook: Callable[[int], object],
                 remove_hook: Callable[[object], None]) -> None:
        self.decoder = decoder
        self.kinds: frozenset[SiteKind] = frozenset()
        self._add_hook = add_hook
        self._remove_hook = remove_hook
        self._scans: dict[int, _PageScan] = {}
        self._hooks: dict[int, object] = {}
        self._sites: dict[int, Site] = {}
        self.generation: dict[int, int] = {}
        self.pages_scanned = 0

    def site_at(self, address: int) -> Site | None:
        return self._sites.get(address)

    def is_code_page(self, hpa_page: int) -> bool:
        return hpa_page in self.generation

    def note_write(self, hpa_page: int) -> None:
        """The guest (or the VMM) wrote a page that holds scanned code: rescan on next fetch."""
        if hpa_page in self.generation:
            self.generation[hpa_page] += 1

    def fetched(self, vpage: int, hpa_page: int, read_code: Callable[[], tuple[bytes, int]]) -> None:
        """A fetch fill mapped vpage -> hpa_page: make the page's sites current."""
        generation = self.generation.setdefault(hpa_page, 0)
        known = self._scans.get(vpage)
        if known is not None and known.hpa_page == hpa_page and known.generation == generation:
            return
        code, limit = read_code()
        sites = scan(code, vpage, limit, self.decoder, self.kinds)
        self.pages_scanned += 1
        self._replace(vpage, known.sites if known else (), sites)
        self._scans[vpage] = _PageScan(hpa_page, generation, sites)

    def _replace(self, vpage: int, old: Iterable[Site], new: Iterable[Site]) -> None:
        for site in old:
            self._release(site.address)
        for site in new:
            self._sites[site.address] = site
            if site.address not in self._hooks:
                self._hooks[site.address] = self._add_hook(site.address)

    def _release(self, address: int) -> None:
        """Pages never overlap, so an address belongs to exactly one page's scan."""
        self._sites.pop(address, None)
        hook = self._hooks.pop(address, None)
        if hook is not None:
            self._remove_hook(hook)

    def version(self, vpage: int) -> int:
        """A number that changes when the page's mapping or code changes (-1: never scanned)."""
        scan = self._scans.get(vpage)
        if scan is None:
            return -1
        return (scan.hpa_page << 20) | (self.generation.get(scan.hpa_page, 0) & 0xFFFFF)

    def replant(self, kinds: frozenset[SiteKind]) -> None:
        """New site classes (controls changed): forget every scan; pages rescan on next fetch."""
        for address in list(self._hooks):
            self._remove_hook(self._hooks.pop(address))
        self._sites.clear()
        self._scans.clear()
        self.kinds = kinds

    @property
    def hook_count(self) -> int:
        return len(self._hooks)
