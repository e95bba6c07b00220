"""Gate descriptors and TSS fields, decoded as the SDM lays them out (Vol. 3A 6.11, 6.14, 7.2)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class GateType(IntEnum):
    """System-descriptor types that may appear in an IDT (SDM Vol. 3A Table 3-2)."""

    TASK = 0x5
    INTERRUPT16 = 0x6
    TRAP16 = 0x7
    INTERRUPT32 = 0xE   # in IA-32e mode: 64-bit interrupt gate
    TRAP32 = 0xF        # in IA-32e mode: 64-bit trap gate


@dataclass(frozen=True)
class Gate:
    """An IDT entry: where a vector's handler is and how it is entered."""

    selector: int
    offset: int
    type: int
    dpl: int
    present: bool
    ist: int = 0

    @property
    def clears_if(self) -> bool:
        """Interrupt gates clear IF; trap gates leave it (SDM Vol. 3A 6.12.1.3)."""
        return self.type in (GateType.INTERRUPT16, GateType.INTERRUPT32)

    @property
    def is_16bit(self) -> bool:
        return self.type in (GateType.INTERRUPT16, GateType.TRAP16)

    @classmethod
    def legacy(cls, raw: int) -> "Gate":
        """An 8-byte protected-mode gate (SDM Vol. 3A Figure 6-2)."""
        low, high = raw & 0xFFFFFFFF, raw >> 32
        return cls(selector=low >> 16, offset=(low & 0xFFFF) | (high & 0xFFFF0000),
                   type=(high >> 8) & 0x1F, dpl=(high >> 13) & 3, present=bool(high >> 15 & 1))

    @classmethod
    def long_mode(cls, raw: int) -> "Gate":
        """A 16-byte IA-32e gate (SDM Vol. 3A Figure 6-8): IST in bits 34:32, offset 63:32 above."""
        legacy = cls.legacy(raw & 0xFFFFFFFFFFFFFFFF)
        offset = legacy.offset | ((raw >> 64) & 0xFFFFFFFF) << 32
        return cls(selector=legacy.selector, offset=offset, type=legacy.type, dpl=legacy.dpl,
                   present=legacy.present, ist=(raw >> 32) & 0x7)


class TssType(IntEnum):
    AVAILABLE16 = 0x1
    BUSY16 = 0x3
    AVAILABLE32 = 0x9   # 64-bit TSS in IA-32e mode
    BUSY32 = 0xB


def tss32_stack_offsets(cpl: int, is_16bit: bool) -> tuple[int, int, int]:
    """(offset of SPn, offset of SSn, size of SPn) in a 16- or 32-bit TSS (SDM Figures 7-2, 7-11)."""
    if is_16bit:
        return 2 + 4 * cpl, 4 + 4 * cpl, 2
    return 4 + 8 * cpl, 8 + 8 * cpl, 4


def tss64_rsp_offset(cpl: int) -> int:
    """RSPn in a 64-bit TSS (SDM Vol. 3A Figure 7-11)."""
    return 4 + 8 * cpl


def tss64_ist_offset(ist: int) -> int:
    """ISTn (1..7) in a 64-bit TSS (SDM Vol. 3A Figure 7-11)."""
    return 36 + 8 * (ist - 1)


# Vectors whose hardware delivery pushes an error code (SDM Vol. 3A 6.13 and Table 6-1).
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21})

# Exception classes for double-fault escalation (SDM Vol. 3A 6.15, Tables 6-4 and 6-5).
CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})
PAGE_FAULT = 14
DOUBLE_FAULT = 8
FAULT_CLASS = frozenset({0, 5, 6, 7, 10, 11, 12, 13, 14, 16, 17, 19, 20})
