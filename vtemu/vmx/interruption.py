"""The interruption-information format and which exceptions push an error code.

One layout serves three VMCS fields (SDM 24.8.3 Table 24-13 VM-entry interruption information,
24.9.2 Table 24-15 VM-exit interruption information, 24.9.3 Table 24-16 IDT-vectoring
information):

    bits 7:0   vector
    bits 10:8  interruption type
    bit 11     deliver error code (entry) / error code valid (exit, IDT vectoring)
    bit 12     NMI unblocking due to IRET (exit interruption information only; reserved on
               entry, undefined in IDT-vectoring information)
    bits 30:13 reserved (0)
    bit 31     valid
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from vtemu.vmx.bits import BitStruct, bits, flag


class InterruptionType(IntEnum):
    """Bits 10:8. Value 1 is reserved; 7 ("other event") exists only for VM entry (MTF)."""

    EXTERNAL_INTERRUPT = 0
    NMI = 2
    HARDWARE_EXCEPTION = 3
    SOFTWARE_INTERRUPT = 4
    PRIVILEGED_SOFTWARE_EXCEPTION = 5
    SOFTWARE_EXCEPTION = 6
    OTHER_EVENT = 7

    @property
    def is_software(self) -> bool:
        """Types whose injection uses the VM-entry instruction length (SDM 26.5.1.1)."""
        return self in (
            InterruptionType.SOFTWARE_INTERRUPT,
            InterruptionType.PRIVILEGED_SOFTWARE_EXCEPTION,
            InterruptionType.SOFTWARE_EXCEPTION,
        )


RESERVED_INTERRUPTION_TYPE = 1


class ExceptionVector(IntEnum):
    """Architectural exception vectors (SDM Vol. 3A 6.3, Table 6-1)."""

    DE = 0
    DB = 1
    NMI = 2
    BP = 3
    OF = 4
    BR = 5
    UD = 6
    NM = 7
    DF = 8
    TS = 10
    NP = 11
    SS = 12
    GP = 13
    PF = 14
    MF = 16
    AC = 17
    MC = 18
    XM = 19
    VE = 20
    CP = 21


# SDM Vol. 3A 6.15 / Table 6-1: exceptions that push an error code (#DF and #AC always push 0).
# #CP (21) pushes one too, but exists only with CET, so callers say whether CET is present.
_ERROR_CODE_VECTORS = frozenset(
    {ExceptionVector.DF, ExceptionVector.TS, ExceptionVector.NP, ExceptionVector.SS, ExceptionVector.GP,
     ExceptionVector.PF, ExceptionVector.AC}
)


def error_code_vectors(*, cet: bool) -> frozenset[int]:
    """Vectors of the exceptions that deliver an error code on a processor with or without CET."""
    return _ERROR_CODE_VECTORS | {ExceptionVector.CP} if cet else _ERROR_CODE_VECTORS


def exception_delivers_error_code(vector: int, *, protected_mode: bool, cet: bool = False) -> bool:
    """Whether delivering exception `vector` pushes an error code.

    Real-address mode never pushes one (SDM Vol. 3A 20.1.4: real-mode exception delivery pushes
    only FLAGS, CS and IP); in protected and IA-32e mode the vectors of 6.15 do.
    """
    return protected_mode and vector in error_code_vectors(cet=cet)


@dataclass(frozen=True)
class InterruptionInfo(BitStruct):
    """A decoded interruption-information field (any of the three that share the layout)."""

    vector: int = bits(7, 0)
    type: InterruptionType = bits(10, 8, InterruptionType)
    deliver_error_code: bool = flag(11)
    nmi_unblocking: bool = flag(12)
    valid: bool = flag(31, default=True)

    @classmethod
    def exception(cls, vector: int, *, error_code: bool = False) -> InterruptionInfo:
        """A hardware exception, with `error_code` saying whether one accompanies it."""
        return cls(vector, InterruptionType.HARDWARE_EXCEPTION, deliver_error_code=error_code)

    @classmethod
    def external_interrupt(cls, vector: int) -> InterruptionInfo:
        return cls(vector, InterruptionType.EXTERNAL_INTERRUPT)

    @classmethod
    def nmi(cls) -> InterruptionInfo:
        return cls(ExceptionVector.NMI, InterruptionType.NMI)


# The value of a field whose valid bit is clear (VM exits clear the entry field's bit 31, 27.2).
INVALID = 0
