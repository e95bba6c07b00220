"""The parts of the CPU that Unicorn's register API cannot reach: descriptor caches and hflags.

A vCPU is a UC_MODE_64 engine so that every register is readable in every CPU mode; in
such an engine a CS or SS write changes only the selector. Hardware-initiated transfers
that vtemu performs itself (interrupt delivery, SYSCALL, VM entry) must load the hidden
descriptor cache and the CPL, which QEMU keeps in `segs[]` and `hflags`. This module edits
them in a saved context and restores it, updating hflags exactly as QEMU's
cpu_x86_load_seg_cache() does so the translator sees a consistent CPU.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from enum import IntEnum

from vtemu.machine.unicorn_ffi import CpuStatePrefix, Engine, SegmentCacheLayout, _lib, context_offsets

# QEMU target/i386/cpu.h hidden-flag bits (hflags) and descriptor-cache flag bits. The cache's
# `flags` word is the descriptor's high dword masked to type/S/DPL/P/AVL/L/D-B/G (SDM 3.4.5).
HF_CPL_MASK = 0x3
HF_INHIBIT_IRQ = 1 << 3
HF_CS32 = 1 << 4
HF_SS32 = 1 << 5
HF_ADDSEG = 1 << 6
HF_PE = 1 << 7
HF_LMA = 1 << 14
HF_CS64 = 1 << 15
HF2_NMI_MASK = 1 << 2      # hflags2: "CPU serving NMI", cleared by IRET (QEMU seg_helper.c)

DESC_TYPE_SHIFT = 8
DESC_S = 1 << 12
DESC_DPL_SHIFT = 13
DESC_P = 1 << 15
DESC_L = 1 << 21
DESC_B = 1 << 22
DESC_G = 1 << 23
RFLAGS_VM = 1 << 17
CR0_PE = 1


class Seg(IntEnum):
    """QEMU's (and the SDM's sreg encoding) order of segment registers."""

    ES = 0
    CS = 1
    SS = 2
    DS = 3
    FS = 4
    GS = 5


@dataclass(frozen=True)
class SegmentCache:
    """A loaded segment: selector plus the hidden part of the descriptor (SDM Vol. 3A 3.4.3)."""

    selector: int
    base: int
    limit: int
    flags: int

    @property
    def dpl(self) -> int:
        return (self.flags >> DESC_DPL_SHIFT) & 3

    @property
    def present(self) -> bool:
        return bool(self.flags & DESC_P)

    @property
    def type(self) -> int:
        return (self.flags >> DESC_TYPE_SHIFT) & 0xF

    @property
    def system(self) -> bool:
        """True for system descriptors (S = 0): TSS, LDT, gates."""
        return not self.flags & DESC_S

    @property
    def long(self) -> bool:
        return bool(self.flags & DESC_L)

    @property
    def big(self) -> bool:
        return bool(self.flags & DESC_B)

    @classmethod
    def from_descriptor(cls, selector: int, descriptor: int) -> "SegmentCache":
        """Decode an 8-byte GDT/LDT descriptor (SDM Vol. 3A Figure 3-8)."""
        low, high = descriptor & 0xFFFFFFFF, descriptor >> 32
        base = (low >> 16) | ((high & 0xFF) << 16) | (high & 0xFF000000)
        limit = (low & 0xFFFF) | (high & 0x000F0000)
        if high & DESC_G:
            limit = (limit << 12) | 0xFFF
        return cls(selector, base, limit, high & 0x00F0FF00)

    @classmethod
    def real_mode(cls, selector: int) -> "SegmentCache":
        """What a real-mode segment load leaves in the cache: base = selector * 16, 64 KiB."""
        return cls(selector, selector << 4, 0xFFFF, DESC_P | DESC_S | (3 << DESC_TYPE_SHIFT))


class CpuContext:
    """A saved CPU context that can be edited and restored into the engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._offsets = context_offsets()
        self._saved = engine.uc.context_save()
        self._address = self._saved.context.value
        self._state = CpuStatePrefix.from_address(self._address + self._offsets.header)

    def load(self) -> "CpuContext":
        """Copy the live CPU into this context (one memcpy)."""
        _lib.uc_context_save(self._engine.handle, self._saved.context)
        return self

    def store(self) -> None:
        """Copy this context back into the live CPU."""
        _lib.uc_context_restore(self._engine.handle, self._saved.context)

    # --- fields --------------------------------------------------------------------------
    @property
    def hflags(self) -> int:
        return self._state.hflags

    @property
    def cs_base(self) -> int:
        return self._state.segs[Seg.CS].base

    @property
    def cpl(self) -> int:
        return self._state.hflags & HF_CPL_MASK

    @property
    def interrupt_shadow(self) -> bool:
        """Blocking by STI or MOV SS: QEMU's HF_INHIBIT_IRQ (one flag for both)."""
        return bool(self._state.hflags & HF_INHIBIT_IRQ)

    def clear_interrupt_shadow(self) -> None:
        self._state.hflags &= ~HF_INHIBIT_IRQ

    def set_interrupt_shadow(self) -> None:
        self._state.hflags |= HF_INHIBIT_IRQ

    @property
    def nmi_blocked(self) -> bool:
        """Blocking by NMI (SDM 6.7.1, 24.4.2 bit 3): from NMI delivery to the next IRET."""
        return bool(self._state.hflags2 & HF2_NMI_MASK)

    def set_nmi_blocked(self, blocked: bool) -> None:
        if blocked:
            self._state.hflags2 |= HF2_NMI_MASK
        else:
            self._state.hflags2 &= ~HF2_NMI_MASK

    def segment(self, seg: Seg) -> SegmentCache:
        return _cache_of(self._state.segs[seg])

    def table(self, name: str) -> SegmentCache:
        """'gdt', 'idt', 'ldt' or 'tr'."""
        return _cache_of(getattr(self._state, name))

    def load_segment(self, seg: Seg, cache: SegmentCache) -> None:
        """Load a descriptor cache the way QEMU's cpu_x86_load_seg_cache() does (hflags too)."""
        target = self._state.segs[seg]
        target.selector, target.base = cache.selector, cache.base
        target.limit, target.flags = cache.limit, cache.flags
        self._update_hflags(seg, cache.flags)

    def set_table(self, name: str, cache: SegmentCache) -> None:
        target = getattr(self._state, name)
        target.selector, target.base = cache.selector, cache.base
        target.limit, target.flags = cache.limit, cache.flags

    def _update_hflags(self, seg: Seg, flags: int) -> None:
        state = self._state
        hflags = state.hflags
        if seg == Seg.CS:
            if hflags & HF_LMA and flags & DESC_L:
                hflags = (hflags | HF_CS32 | HF_SS32 | HF_CS64) & ~HF_ADDSEG
            else:
                cs32 = HF_CS32 if state.segs[Seg.CS].flags & DESC_B else 0
                hflags = (hflags & ~(HF_CS32 | HF_CS64)) | cs32
        if seg == Seg.SS:
            hflags = (hflags & ~HF_CPL_MASK) | ((flags >> DESC_DPL_SHIFT) & 3)
        derived = HF_SS32 if state.segs[Seg.SS].flags & DESC_B else 0
        if hflags & HF_CS64:
            pass  # long mode: DS, ES and SS bases are treated as zero
        elif not state.cr[0] & CR0_PE or state.eflags & RFLAGS_VM or not hflags & HF_CS32:
            derived |= HF_ADDSEG
        elif state.segs[Seg.DS].base | state.segs[Seg.ES].base | state.segs[Seg.SS].base:
            derived |= HF_ADDSEG
        state.hflags = (hflags & ~(HF_SS32 | HF_ADDSEG)) | derived

    # --- Unicorn's stale exception state -------------------------------------------------
    def _int32(self, offset: int) -> ctypes.c_int32:
        return ctypes.c_int32.from_address(self._address + offset)

    @property
    def error_code(self) -> int:
        """Error code of the exception QEMU just raised (not exposed by Unicorn's API)."""
        return self._int32(self._offsets.error_code).value & 0xFFFFFFFF

    @property
    def exception_is_software(self) -> bool:
        """True when the last event came from INT n / INT3 / INTO rather than a fault."""
        return bool(self._int32(self._offsets.exception_is_int).value)

    def forget_exception_in_flight(self) -> None:
        """Reset QEMU's old_exception, which only QEMU's (unused) delivery code would reset."""
        self._int32(self._offsets.old_exception).value = -1


def _cache_of(layout: SegmentCacheLayout) -> SegmentCache:
    return SegmentCache(layout.selector, layout.base, layout.limit, layout.flags)
