"""The VMCS guest-state area as a live view of the vCPU (SDM Vol. 3C 24.4).

On silicon a VM exit saves the guest's registers into the VMCS and a VM entry loads them
back. vtemu's guest and hypervisor share one Python process and the vCPU's registers stay
in Unicorn, so copying them at every exit would only cost time: instead each guest-state
field reads or writes the live register it describes. The observable semantics are the
same: the hypervisor sees the guest state of the last exit and its VMWRITEs take effect at
the next entry (the vCPU does not run in between).
"""

from __future__ import annotations

from typing import Callable

import unicorn.x86_const as U

from vtemu.machine.cpustate import HF_INHIBIT_IRQ, Seg, SegmentCache
from vtemu.machine.vcpu import VCpu
from vtemu.vmx.fields import GuestSegment, VmcsField, guest_segment_fields

F = VmcsField
RFLAGS_IF = 1 << 9

# SDM 24.4.2 interruptibility-state bits.
DESCRIPTOR_S = 1 << 4      # access rights: code/data (not system)
TYPE_ACCESSED = 1 << 0

TSS16_AVAILABLE, TSS_AVAILABLE, TSS_BUSY_BIT = 0x1, 0x9, 0x2

BLOCKING_BY_STI = 1 << 0
BLOCKING_BY_MOV_SS = 1 << 1
BLOCKING_BY_NMI = 1 << 3

_REGISTERS = {
    F.GUEST_CR0: U.UC_X86_REG_CR0, F.GUEST_CR3: U.UC_X86_REG_CR3, F.GUEST_CR4: U.UC_X86_REG_CR4,
    F.GUEST_DR7: U.UC_X86_REG_DR7, F.GUEST_RSP: U.UC_X86_REG_RSP, F.GUEST_RIP: U.UC_X86_REG_RIP,
    F.GUEST_RFLAGS: U.UC_X86_REG_RFLAGS,
}
_MSRS = {
    F.GUEST_IA32_EFER: 0xC0000080, F.GUEST_IA32_PAT: 0x277, F.GUEST_SYSENTER_CS: 0x174,
    F.GUEST_SYSENTER_ESP: 0x175, F.GUEST_SYSENTER_EIP: 0x176,
}
_TABLES = {GuestSegment.LDTR: "ldt", GuestSegment.TR: "tr"}
_SEGMENT_OF_FIELD: dict[VmcsField, tuple[GuestSegment, str]] = {}
for _segment in GuestSegment:
    _fields = guest_segment_fields(_segment)
    for _part in ("selector", "base", "limit", "access_rights"):
        _SEGMENT_OF_FIELD[getattr(_fields, _part)] = (_segment, _part)
_DESCRIPTOR_TABLES = {F.GUEST_GDTR_BASE: ("gdt", "base"), F.GUEST_GDTR_LIMIT: ("gdt", "limit"),
                      F.GUEST_IDTR_BASE: ("idt", "base"), F.GUEST_IDTR_LIMIT: ("idt", "limit")}


def access_rights(cache: SegmentCache, usable: bool = True) -> int:
    """QEMU's cached descriptor flags in the VMX access-rights format (SDM 24.4.1 Table 24-2).

    A processor sets a code or data descriptor's accessed bit whenever it loads the segment
    (SDM Vol. 3A 3.4.5.1), so a loaded, usable code/data segment is always "accessed"; QEMU
    skips that write for some loads, so the bit is supplied here."""
    rights = (cache.flags >> 8) & 0xF0FF
    if not usable:
        return rights | (1 << 16)
    if rights & DESCRIPTOR_S:
        rights |= TYPE_ACCESSED
    return rights


def flags_from_access_rights(rights: int) -> int:
    return (rights & 0xF0FF) << 8


class LiveGuestState:
    """GuestStateBackend over a VCpu; fields with no register behind them are kept here."""

    def __init__(self, vcpu: VCpu, activity: Callable[[], int],
                 set_activity: Callable[[int], None]) -> None:
        self.vcpu = vcpu
        self._activity = activity
        self._set_activity = set_activity
        self._stored: dict[VmcsField, int] = {F.VMCS_LINK_POINTER: 0xFFFFFFFFFFFFFFFF}

    def read_field(self, field: VmcsField) -> int:
        if field in _REGISTERS:
            return self.vcpu.read(_REGISTERS[field])
        if field in _MSRS:
            return self.vcpu.read_msr(_MSRS[field])
        if field in _SEGMENT_OF_FIELD:
            return self._read_segment(*_SEGMENT_OF_FIELD[field])
        if field in _DESCRIPTOR_TABLES:
            table, part = _DESCRIPTOR_TABLES[field]
            return getattr(self.vcpu.context.load().table(table), part)
        if field is F.GUEST_INTERRUPTIBILITY_INFO:
            return self.interruptibility()
        if field is F.GUEST_ACTIVITY_STATE:
            return self._activity()
        return self._stored.get(field, 0)

    def write_field(self, field: VmcsField, value: int) -> None:
        if field in _REGISTERS:
            self.vcpu.write(_REGISTERS[field], value)
        elif field in _MSRS:
            self.vcpu.write_msr(_MSRS[field], value)
        elif field in _SEGMENT_OF_FIELD:
            self._write_segment(*_SEGMENT_OF_FIELD[field], value)
        elif field in _DESCRIPTOR_TABLES:
            table, part = _DESCRIPTOR_TABLES[field]
            context = self.vcpu.context.load()
            current = context.table(table)
            context.set_table(table, _replace(current, part, value))
            context.store()
        elif field is F.GUEST_INTERRUPTIBILITY_INFO:
            self._write_interruptibility(value)
        elif field is F.GUEST_ACTIVITY_STATE:
            self._set_activity(value)
        else:
            self._stored[field] = value

    # --- interruptibility (SDM 24.4.2) ----------------------------------------------------
    def interruptibility(self) -> int:
        """QEMU keeps one flag for STI and MOV-SS blocking; IF tells which it must be (STI sets IF)."""
        context = self.vcpu.context.load()
        nmi = BLOCKING_BY_NMI if context.nmi_blocked else 0
        if not context.hflags & HF_INHIBIT_IRQ:
            return nmi
        if self.vcpu.read(U.UC_X86_REG_RFLAGS) & RFLAGS_IF:
            return nmi | BLOCKING_BY_STI
        return nmi | BLOCKING_BY_MOV_SS

    def _write_interruptibility(self, value: int) -> None:
        context = self.vcpu.context.load()
        if value & (BLOCKING_BY_STI | BLOCKING_BY_MOV_SS):
            context.set_interrupt_shadow()
        else:
            context.clear_interrupt_shadow()
        context.set_nmi_blocked(bool(value & BLOCKING_BY_NMI))
        context.store()

    # --- segments -------------------------------------------------------------------------
    def _cache(self, segment: GuestSegment) -> SegmentCache:
        context = self.vcpu.context.load()
        if segment in _TABLES:
            return context.table(_TABLES[segment])
        return context.segment(Seg(int(segment)))

    def _read_segment(self, segment: GuestSegment, part: str) -> int:
        cache = self._cache(segment)
        if part == "access_rights":
            rights = access_rights(cache, usable=self._usable(segment, cache))
            if segment is GuestSegment.TR and rights & 0xF in (TSS16_AVAILABLE, TSS_AVAILABLE):
                # LTR marks the TSS busy and the processor's TR then holds the busy type (SDM
                # Vol. 2 LTR); QEMU caches the descriptor before setting the bit.
                rights |= TSS_BUSY_BIT
            return rights
        return getattr(cache, part)

    def _usable(self, segment: GuestSegment, cache: SegmentCache) -> bool:
        """A null selector loaded in protected mode leaves a segment unusable (SDM 24.4.1)."""
        if segment is GuestSegment.CS or not self.vcpu.read(U.UC_X86_REG_CR0) & 1:
            return True
        return cache.present

    def _write_segment(self, segment: GuestSegment, part: str, value: int) -> None:
        context = self.vcpu.context.load()
        current = self._cache(segment)
        if part == "access_rights":
            updated = _replace(current, "flags", flags_from_access_rights(value))
        else:
            updated = _replace(current, part, value)
        if segment in _TABLES:
            context.set_table(_TABLES[segment], updated)
        else:
            context.load_segment(Seg(int(segment)), updated)
        context.store()


def _replace(cache: SegmentCache, part: str, value: int) -> SegmentCache:
    fields = {"selector": cache.selector, "base": cache.base, "limit": cache.limit,
              "flags": cache.flags}
    fields[part] = value
    return SegmentCache(**fields)
