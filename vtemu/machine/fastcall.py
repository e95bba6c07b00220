"""SYSCALL and SYSENTER: the ring transitions Unicorn's core skips.

Unicorn's helpers for these instructions only call hooks and step over the instruction;
the processor's work (SDM Vol. 2B SYSCALL, SYSENTER) is done here: load the fixed flat
CS/SS descriptor caches at CPL 0, save the return point, mask RFLAGS, jump. SYSRET and
SYSEXIT are executed correctly by Unicorn itself.
"""

from __future__ import annotations

import unicorn.x86_const as U

from vtemu.machine.cpustate import DESC_B, DESC_G, DESC_L, DESC_P, DESC_S, Seg, SegmentCache
from vtemu.machine.msrs import (IA32_EFER, IA32_FMASK, IA32_LSTAR, IA32_STAR, IA32_SYSENTER_CS,
                                IA32_SYSENTER_EIP, IA32_SYSENTER_ESP)
from vtemu.machine.vcpu import GuestException, VCpu

UD, GP = 6, 13
EFER_SCE = 1 << 0
EFER_LMA = 1 << 10
RFLAGS_IF = 1 << 9
RFLAGS_RF = 1 << 16
RFLAGS_VM = 1 << 17
_FLAT = 0xFFFFFFFF
_CODE = DESC_P | DESC_S | (0xB << 8) | DESC_G           # execute/read, accessed
_STACK = DESC_P | DESC_S | (0x3 << 8) | DESC_G | DESC_B  # read/write, accessed


def syscall(vcpu: VCpu, length: int) -> None:
    """SYSCALL in 64-bit mode; #UD in any other mode or with IA32_EFER.SCE = 0."""
    efer = vcpu.read_msr(IA32_EFER)
    context = vcpu.context.load()
    if not efer & EFER_SCE or not efer & EFER_LMA or not context.segment(Seg.CS).long:
        raise GuestException(UD)
    star = vcpu.read_msr(IA32_STAR)
    selector = (star >> 32) & 0xFFFC
    rflags = vcpu.read(U.UC_X86_REG_RFLAGS)
    context.load_segment(Seg.CS, SegmentCache(selector, 0, _FLAT, _CODE | DESC_L))
    context.load_segment(Seg.SS, SegmentCache(selector + 8, 0, _FLAT, _STACK))
    context.store()
    vcpu.write(U.UC_X86_REG_RCX, vcpu.rip + length)
    vcpu.write(U.UC_X86_REG_R11, rflags)
    vcpu.write(U.UC_X86_REG_RFLAGS, (rflags & ~vcpu.read_msr(IA32_FMASK) & ~RFLAGS_RF) | 2)
    vcpu.rip = vcpu.read_msr(IA32_LSTAR)


def sysenter(vcpu: VCpu) -> None:
    """SYSENTER: #GP(0) in real mode or with a null IA32_SYSENTER_CS."""
    selector = vcpu.read_msr(IA32_SYSENTER_CS) & 0xFFFC
    if not vcpu.read(U.UC_X86_REG_CR0) & 1 or selector == 0:
        raise GuestException(GP, 0)
    long_mode = bool(vcpu.read_msr(IA32_EFER) & EFER_LMA)
    code = _CODE | (DESC_L if long_mode else DESC_B)
    context = vcpu.context.load()
    context.load_segment(Seg.CS, SegmentCache(selector, 0, _FLAT, code))
    context.load_segment(Seg.SS, SegmentCache(selector + 8, 0, _FLAT, _STACK))
    context.store()
    rflags = vcpu.read(U.UC_X86_REG_RFLAGS)
    vcpu.write(U.UC_X86_REG_RFLAGS, (rflags & ~(RFLAGS_VM | RFLAGS_IF | RFLAGS_RF)) | 2)
    mask = 0xFFFFFFFFFFFFFFFF if long_mode else 0xFFFFFFFF
    vcpu.write(U.UC_X86_REG_RSP, vcpu.read_msr(IA32_SYSENTER_ESP) & mask)
    vcpu.rip = vcpu.read_msr(IA32_SYSENTER_EIP) & mask
