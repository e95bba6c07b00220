"""What a second-level translation (nested paging or shadow paging) promises the vCPU.

The vCPU asks a Translator, on every TLB miss and for every access the VMM performs on
guest-linear addresses, where a linear page lives in host-physical memory and what the
access may do. Translators refuse by raising a TranslationFault subclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol


class MemoryAccess(IntEnum):
    READ = 0
    WRITE = 1
    FETCH = 2


@dataclass(frozen=True, slots=True)
class PagingRegs:
    """The architectural registers that select and root a guest page walk (SDM Vol. 3A 4.1)."""

    cr0: int
    cr3: int
    cr4: int
    efer: int


@dataclass(frozen=True, slots=True)
class Fill:
    """Result of translating one linear page: where it lives and what the access may do."""

    hpa: int
    readable: bool
    writable: bool
    executable: bool
    dirty: bool = True
    vmm: bool = False       # the hypervisor's own memory (a translation cache): no site scanning


class TranslationFault(Exception):
    """Base of everything a Translator raises to refuse a fill (guest #PF, EPT violation...)."""


class KernelCodeFetch(TranslationFault):
    """A CPU-mode engine refuses a kernel code fetch at `linear`: the vCPU stops there, the
    fetch not performed, so the engine can act first (translate it, deprivilege the kernel)."""

    def __init__(self, linear: int, why: str) -> None:
        super().__init__(f"{why} at {linear:#x}")
        self.linear = linear


class GuestPageFault(TranslationFault):
    """A linear address the guest's own page tables do not allow: #PF with CR2 = linear."""

    def __init__(self, linear: int, error_code: int) -> None:
        super().__init__(f"#PF at {linear:#x} (error code {error_code:#x})")
        self.linear = linear
        self.error_code = error_code


class NonCanonicalAddress(TranslationFault):
    """An IA-32e linear address whose bits 63:47 are not all equal: #GP(0) (#SS(0) on the
    stack) before any page walk (SDM Vol. 1 3.3.7.1, Vol. 3A 4.5)."""

    def __init__(self, linear: int) -> None:
        super().__init__(f"non-canonical address {linear:#x}")
        self.linear = linear


def canonical(linear: int) -> bool:
    top = linear >> 47
    return top == 0 or top == 0x1FFFF


class SecondLevelFault(TranslationFault):
    """The hypervisor's own translation (EPT) refused a guest-physical access: a VM exit, not a
    guest fault. `qualification` follows the EPT-violation layout (SDM Table 27-7)."""

    misconfiguration = False

    def __init__(self, gpa: int, qualification: int = 0, linear: int | None = None) -> None:
        kind = "misconfiguration" if self.misconfiguration else "violation"
        super().__init__(f"EPT {kind} at GPA {gpa:#x}")
        self.gpa = gpa
        self.qualification = qualification
        self.linear = linear


class Overlay(Protocol):
    """Linear pages a CPU mode's engine serves itself before the translator is asked (a binary
    translator's code cache): a Fill, None to fall through, or a TranslationFault to refuse.
    `context` is the CPU state at the access (machine/cpustate.py CpuContext)."""

    def fill(self, linear: int, access: MemoryAccess, context: object) -> Fill | None: ...


class Translator(Protocol):
    def translate(self, paging: PagingRegs, linear: int, access: MemoryAccess,
                  user: bool) -> Fill: ...
