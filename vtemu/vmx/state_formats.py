"""Formats of guest-state values that VM-entry checks and VM exits interpret.

Architectural register bits (CR0, CR4, RFLAGS, IA32_EFER; SDM Vol. 3A 2.5, 2.2.1 and Vol. 1
3.4.3) and the VMCS-specific guest-state formats of SDM 24.4: segment access rights (Table
24-2), activity state (24.4.2), interruptibility state (Table 24-3) and pending debug
exceptions (Table 24-4).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from vtemu.vmx.bits import BitStruct, bits, flag, ones


class Cr0(IntFlag):
    """SDM Vol. 3A 2.5, Figure 2-7."""

    PE = 1 << 0
    MP = 1 << 1
    EM = 1 << 2
    TS = 1 << 3
    ET = 1 << 4
    NE = 1 << 5
    WP = 1 << 16
    AM = 1 << 18
    NW = 1 << 29
    CD = 1 << 30
    PG = 1 << 31


class Cr4(IntFlag):
    """SDM Vol. 3A 2.5, Figure 2-7."""

    VME = 1 << 0
    PVI = 1 << 1
    TSD = 1 << 2
    DE = 1 << 3
    PSE = 1 << 4
    PAE = 1 << 5
    MCE = 1 << 6
    PGE = 1 << 7
    PCE = 1 << 8
    OSFXSR = 1 << 9
    OSXMMEXCPT = 1 << 10
    UMIP = 1 << 11
    LA57 = 1 << 12
    VMXE = 1 << 13
    SMXE = 1 << 14
    FSGSBASE = 1 << 16
    PCIDE = 1 << 17
    OSXSAVE = 1 << 18
    KL = 1 << 19
    SMEP = 1 << 20
    SMAP = 1 << 21
    PKE = 1 << 22
    CET = 1 << 23
    PKS = 1 << 24


class Rflags(IntFlag):
    """SDM Vol. 1 3.4.3, Figure 3-8 (bit 1 is reserved and always 1)."""

    CF = 1 << 0
    FIXED1 = 1 << 1
    PF = 1 << 2
    AF = 1 << 4
    ZF = 1 << 6
    SF = 1 << 7
    TF = 1 << 8
    IF = 1 << 9
    DF = 1 << 10
    OF = 1 << 11
    IOPL = 3 << 12
    NT = 1 << 14
    RF = 1 << 16
    VM = 1 << 17
    AC = 1 << 18
    VIF = 1 << 19
    VIP = 1 << 20
    ID = 1 << 21


# SDM 26.3.1.4: bits 63:22, 15, 5 and 3 of RFLAGS are reserved and must be 0 in the guest field.
RFLAGS_RESERVED_ZERO = (ones(42) << 22) | (1 << 15) | (1 << 5) | (1 << 3)


class Efer(IntFlag):
    """IA32_EFER (MSR C000_0080h), SDM Vol. 3A 2.2.1 Table 2-1."""

    SCE = 1 << 0
    LME = 1 << 8
    LMA = 1 << 10
    NXE = 1 << 11


IA32_EFER_DEFINED = int(Efer.SCE | Efer.LME | Efer.LMA | Efer.NXE)


class ActivityState(IntEnum):
    """Guest activity state (SDM 24.4.2)."""

    ACTIVE = 0
    HLT = 1
    SHUTDOWN = 2
    WAIT_FOR_SIPI = 3


class Interruptibility(IntFlag):
    """Guest interruptibility state (SDM 24.4.2, Table 24-3); bits 31:5 are reserved."""

    BLOCKING_BY_STI = 1 << 0
    BLOCKING_BY_MOV_SS = 1 << 1
    BLOCKING_BY_SMI = 1 << 2
    BLOCKING_BY_NMI = 1 << 3
    ENCLAVE_INTERRUPTION = 1 << 4


INTERRUPTIBILITY_RESERVED = ones(32) & ~ones(5)


class PendingDebugExceptions(IntFlag):
    """Guest pending debug exceptions (SDM 24.4.2, Table 24-4)."""

    B0 = 1 << 0
    B1 = 1 << 1
    B2 = 1 << 2
    B3 = 1 << 3
    ENABLED_BREAKPOINT = 1 << 12
    BS = 1 << 14
    RTM = 1 << 16


# Table 24-4: bits 11:4, 13, 15 and 63:17 are reserved (26.3.1.5 requires them to be 0).
PENDING_DEBUG_RESERVED = (ones(8) << 4) | (1 << 13) | (1 << 15) | (ones(47) << 17)


# Descriptor type values the entry checks name (SDM Vol. 3A 3.4.5.1 Table 3-1, 3.5 Table 3-2).
# Plain constants, not an enum: the same number means different things for S = 0 and S = 1.
TYPE_DATA_READ_WRITE_ACCESSED = 3
TYPE_LDT = 2
TYPE_BUSY_TSS_16 = 3
TYPE_BUSY_TSS_32 = 11
CODE_TYPES_ACCESSED = frozenset({9, 11, 13, 15})  # execute(-read), conforming or not, accessed
CODE_TYPES_CONFORMING = frozenset({13, 15})


# Table 24-2: bits 11:8 and 31:17 of an access-rights field are reserved.
ACCESS_RIGHTS_RESERVED = (ones(4) << 8) | (ones(15) << 17)


@dataclass(frozen=True)
class AccessRights(BitStruct):
    """Guest segment access rights (SDM 24.4.1, Table 24-2): the descriptor's type byte and flags.

    Bit 16 ("segment unusable") has no descriptor counterpart: it marks a register loaded with a
    null selector (or never loaded), which VM entry treats as not present.
    """

    type: int = bits(3, 0, default=0)
    s: bool = flag(4)
    dpl: int = bits(6, 5, default=0)
    present: bool = flag(7)
    avl: bool = flag(12)
    long: bool = flag(13)
    default_big: bool = flag(14)
    granularity: bool = flag(15)
    unusable: bool = flag(16)

    @property
    def usable(self) -> bool:
        return not self.unusable

    @property
    def accessed(self) -> bool:
        return bool(self.type & 1)

    @property
    def code(self) -> bool:
        """Type bit 3 for code/data descriptors (S = 1): executable segment."""
        return bool(self.type & 8)

    @property
    def readable_or_writable(self) -> bool:
        """Type bit 1: readable for code, writable for data."""
        return bool(self.type & 2)
