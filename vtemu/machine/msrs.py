"""The model-specific registers of vtemu's virtual processor, and its time-stamp counter.

Unicorn's core implements most MSRs a small kernel touches (EFER, STAR/LSTAR/CSTAR/SFMASK,
FS/GS/KERNEL_GS base, SYSENTER, PAT, MISC_ENABLE) but reads every unknown MSR as 0 where a
processor raises #GP, and derives the TSC from the host clock. This model is the processor's
own behaviour: the MSRs it implements, #GP(0) for any other or for a reserved-bit write
(SDM Vol. 4 and Vol. 2B RDMSR/WRMSR), and a TSC that counts guest time. Both the hypervisor's
MSR exit handlers and MSR accesses the MSR bitmap lets through use it.
"""

from __future__ import annotations

from typing import Callable

import unicorn.x86_const as U

from vtemu.machine import layout
from vtemu.machine.vcpu import GuestException, VCpu

GP = 13

IA32_TIME_STAMP_COUNTER = 0x10
IA32_PLATFORM_ID = 0x17
IA32_APIC_BASE = 0x1B
IA32_FEATURE_CONTROL = 0x3A
IA32_TSC_ADJUST = 0x3B
IA32_BIOS_SIGN_ID = 0x8B
IA32_MTRRCAP = 0xFE
IA32_SYSENTER_CS = 0x174
IA32_SYSENTER_ESP = 0x175
IA32_SYSENTER_EIP = 0x176
IA32_MISC_ENABLE = 0x1A0
IA32_PAT = 0x277
IA32_MTRR_DEF_TYPE = 0x2FF
IA32_EFER = 0xC0000080
IA32_STAR = 0xC0000081
IA32_LSTAR = 0xC0000082
IA32_CSTAR = 0xC0000083
IA32_FMASK = 0xC0000084
IA32_FS_BASE = 0xC0000100
IA32_GS_BASE = 0xC0000101
IA32_KERNEL_GS_BASE = 0xC0000102
IA32_TSC_AUX = 0xC0000103

# MSRs Unicorn's core implements correctly: reads and writes go straight to it.
NATIVE = frozenset({IA32_SYSENTER_CS, IA32_SYSENTER_ESP, IA32_SYSENTER_EIP, IA32_MISC_ENABLE,
                    IA32_PAT, IA32_STAR, IA32_LSTAR, IA32_CSTAR, IA32_FMASK, IA32_FS_BASE,
                    IA32_GS_BASE, IA32_KERNEL_GS_BASE, IA32_TSC_AUX})
CANONICAL = frozenset({IA32_LSTAR, IA32_CSTAR, IA32_FS_BASE, IA32_GS_BASE, IA32_KERNEL_GS_BASE,
                       IA32_SYSENTER_ESP, IA32_SYSENTER_EIP})
# EFER: SCE (0), LME (8), LMA (10, read-only), NXE (11); SDM Vol. 3A 2.2.1.
EFER_WRITABLE = (1 << 0) | (1 << 8) | (1 << 11)
EFER_LMA = 1 << 10
EFER_LME = 1 << 8
APIC_BASE_BSP = 1 << 8
APIC_BASE_ENABLE = 1 << 11
FEATURE_CONTROL_LOCKED = 1    # locked with VMX disabled: nested VMX is not offered


def canonical(value: int) -> bool:
    top = value >> 47
    return top == 0 or top == 0x1FFFF


class TimeStampCounter:
    """TSC = guest time in ns (1 GHz) + IA32_TSC_ADJUST (SDM Vol. 3B 17.17)."""

    FREQUENCY_HZ = 1_000_000_000

    def __init__(self, now_ns: Callable[[], int]) -> None:
        self._now_ns = now_ns
        self.adjust = 0

    def read(self) -> int:
        return (self._now_ns() + self.adjust) & 0xFFFFFFFFFFFFFFFF

    def write(self, value: int) -> None:
        """A write of the TSC moves IA32_TSC_ADJUST by the same amount (SDM 17.17.3)."""
        self.adjust = value - self._now_ns()


class MsrModel:
    """RDMSR/WRMSR as the virtual processor performs them."""

    def __init__(self, vcpu: VCpu, tsc: TimeStampCounter, bsp: bool = True) -> None:
        self.vcpu = vcpu
        self.tsc = tsc
        self.apic_base = layout.LAPIC_GPA | APIC_BASE_ENABLE | (APIC_BASE_BSP if bsp else 0)
        self.mtrr_def_type = 0
        self._ranges: list[tuple[int, int, Callable[[int], int], Callable[[int, int], None]]] = []
        self._readers: dict[int, Callable[[], int]] = {
            IA32_TIME_STAMP_COUNTER: tsc.read,
            IA32_TSC_ADJUST: lambda: tsc.adjust & 0xFFFFFFFFFFFFFFFF,
            IA32_APIC_BASE: lambda: self.apic_base,
            IA32_FEATURE_CONTROL: lambda: FEATURE_CONTROL_LOCKED,
            IA32_PLATFORM_ID: lambda: 0,
            IA32_BIOS_SIGN_ID: lambda: 0,
            IA32_MTRRCAP: lambda: 0,          # no variable or fixed MTRRs offered
            IA32_MTRR_DEF_TYPE: lambda: self.mtrr_def_type,
            IA32_EFER: lambda: vcpu.read_msr(IA32_EFER),
        }

    def add_range(self, first: int, last: int, read: Callable[[int], int],
                  write: Callable[[int, int], None]) -> None:
        """MSRs a device implements (the local APIC's x2APIC registers): its read and write
        raise GuestException for the accesses that #GP."""
        self._ranges.append((first, last, read, write))

    def _range_of(self, msr: int) -> tuple[int, int, Callable[[int], int], Callable[[int, int], None]] | None:
        for entry in self._ranges:
            if entry[0] <= msr <= entry[1]:
                return entry
        return None

    def implemented(self, msr: int) -> bool:
        return msr in NATIVE or msr in self._readers or self._range_of(msr) is not None

    def read(self, msr: int) -> int:
        if self._ranges and (entry := self._range_of(msr)) is not None:
            return entry[2](msr)
        if msr in self._readers:
            return self._readers[msr]()
        if msr in NATIVE:
            return self.vcpu.read_msr(msr)
        raise GuestException(GP, 0)

    def write(self, msr: int, value: int) -> None:
        value &= 0xFFFFFFFFFFFFFFFF
        if self._ranges and (entry := self._range_of(msr)) is not None:
            entry[3](msr, value)
            return
        if msr in CANONICAL and not canonical(value):
            raise GuestException(GP, 0)
        if msr == IA32_TIME_STAMP_COUNTER:
            self.tsc.write(value)
        elif msr == IA32_TSC_ADJUST:
            self.tsc.adjust = value - (1 << 64) if value >> 63 else value
        elif msr == IA32_APIC_BASE:
            self._write_apic_base(value)
        elif msr == IA32_EFER:
            self._write_efer(value)
        elif msr == IA32_MTRR_DEF_TYPE:
            self.mtrr_def_type = value & 0xCFF
        elif msr in NATIVE:
            self.vcpu.write_msr(msr, value)
        else:
            raise GuestException(GP, 0)

    def _write_efer(self, value: int) -> None:
        """Reserved bits #GP; LME may not change while paging is on (SDM Vol. 3A 9.8.5)."""
        current = self.vcpu.read_msr(IA32_EFER)
        if value & ~(EFER_WRITABLE | EFER_LMA):
            raise GuestException(GP, 0)
        paging = self.vcpu.read(U.UC_X86_REG_CR0) >> 31
        if paging and (value ^ current) & EFER_LME:
            raise GuestException(GP, 0)
        self.vcpu.write_msr(IA32_EFER, (value & EFER_WRITABLE) | (current & EFER_LMA))

    def _write_apic_base(self, value: int) -> None:
        """Bits 7:0, 9 and 63:MAXPHYADDR are reserved (SDM Vol. 3A 10.4.4)."""
        if value & 0x2FF or value >> 40:
            raise GuestException(GP, 0)
        self.apic_base = value
