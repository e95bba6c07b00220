"""The hypercall ABI in the shape of the Hyper-V TLFS (v6.0): input value, result value, status
codes, and the register conventions of VMCALL.

TLFS "Hypercall Inputs" -- the 64-bit input value:

    bits 15:0   call code                 bit 16      fast (parameters in registers)
    bits 26:17  variable header size      bits 30:27  reserved (zero)
                (in 8-byte units)         bit 31      nested (reserved here: zero)
    bits 43:32  rep count                 bits 47:44  reserved (zero)
    bits 59:48  rep start index           bits 63:60  reserved (zero)

TLFS "Hypercall Outputs" -- the 64-bit result value: status 15:0, reps completed 43:32,
every other bit zero.

TLFS "Hypercall Inputs", register mapping:

    x64 (64-bit code)   input value RCX, input GPA (or fast input 1) RDX,
                        output GPA (or fast input 2) R8, result RAX
    x86 (32-bit code)   input value EDX:EAX, input GPA EBX:ECX, output GPA EDI:ESI,
                        result EDX:EAX
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import unicorn.x86_const as U

CALL_CODE_MASK = 0xFFFF
FAST_BIT = 1 << 16
VARIABLE_HEADER_SHIFT, VARIABLE_HEADER_MASK = 17, 0x3FF
REP_COUNT_SHIFT, REP_START_SHIFT, REP_MASK = 32, 48, 0xFFF
# Every bit the TLFS calls RsvdZ (including "nested", bit 31, which vtemu does not offer).
INPUT_RESERVED = (0xF << 27) | (1 << 31) | (0xF << 44) | (0xF << 60)
STATUS_MASK = 0xFFFF
PARAMETER_ALIGNMENT = 8          # TLFS "Hypercall Inputs": input and output GPAs are 8-byte aligned
PAGE_SIZE = 4096


class HvStatus(IntEnum):
    """HV_STATUS codes (TLFS appendix "Hypercall Status Codes"); the values are the TLFS's."""

    SUCCESS = 0x0000
    INVALID_HYPERCALL_CODE = 0x0002
    INVALID_HYPERCALL_INPUT = 0x0003
    INVALID_ALIGNMENT = 0x0004
    INVALID_PARAMETER = 0x0005
    ACCESS_DENIED = 0x0006
    INVALID_PARTITION_STATE = 0x0007
    OPERATION_DENIED = 0x0008
    INSUFFICIENT_MEMORY = 0x000B
    INVALID_VP_INDEX = 0x000E
    INVALID_PORT_ID = 0x0011
    INVALID_CONNECTION_ID = 0x0012
    INSUFFICIENT_BUFFERS = 0x0013


class HypercallError(Exception):
    """Raised by a hypercall (or a parameter check) to end it with `status`."""

    def __init__(self, status: HvStatus, reason: str = "", reps_completed: int | None = None) -> None:
        super().__init__(reason or HvStatus(status).name)
        self.status = HvStatus(status)
        self.reps_completed = reps_completed    # a rep call: the element that failed


@dataclass(frozen=True)
class HypercallInput:
    """One VMCALL's input, decoded once (TLFS "Hypercall Inputs"). For a fast call `input`/`output` are the
    two register parameters (RDX and R8, or EBX:ECX and EDI:ESI); otherwise they are the
    input and output parameter GPAs. `rep_end` is where this pass of a rep call stops: the
    dispatcher may cut a long rep list into several passes (TLFS "Hypercall Continuation")."""

    value: int
    input: int
    output: int
    rep_end: int = 0

    @property
    def code(self) -> int:
        return self.value & CALL_CODE_MASK

    @property
    def fast(self) -> bool:
        return bool(self.value & FAST_BIT)

    @property
    def variable_header_qwords(self) -> int:
        return (self.value >> VARIABLE_HEADER_SHIFT) & VARIABLE_HEADER_MASK

    @property
    def rep_count(self) -> int:
        return (self.value >> REP_COUNT_SHIFT) & REP_MASK

    @property
    def rep_start(self) -> int:
        return (self.value >> REP_START_SHIFT) & REP_MASK

    @property
    def reserved_bits(self) -> int:
        return self.value & INPUT_RESERVED

    @property
    def input_gpa(self) -> int:
        return self.input

    @property
    def output_gpa(self) -> int:
        return self.output

    def with_rep_start(self, start: int) -> int:
        """The input value a continuation leaves in the guest's register (TLFS "Hypercall Continuation")."""
        cleared = self.value & ~(REP_MASK << REP_START_SHIFT)
        return cleared | (start & REP_MASK) << REP_START_SHIFT


def input_value(code: int, *, fast: bool = False, rep_count: int = 0, rep_start: int = 0,
                variable_header_qwords: int = 0) -> int:
    """Compose an input value (what a guest puts in RCX); used by tests and tools."""
    return (code & CALL_CODE_MASK | (FAST_BIT if fast else 0)
            | (variable_header_qwords & VARIABLE_HEADER_MASK) << VARIABLE_HEADER_SHIFT
            | (rep_count & REP_MASK) << REP_COUNT_SHIFT | (rep_start & REP_MASK) << REP_START_SHIFT)


def result_value(status: int, reps_completed: int = 0) -> int:
    """TLFS "Hypercall Outputs": status in 15:0, reps completed in 43:32."""
    return (status & STATUS_MASK) | (reps_completed & REP_MASK) << REP_COUNT_SHIFT


@dataclass(frozen=True)
class RegisterConvention:
    """Where a calling convention keeps each 64-bit quantity: one register, or a (high, low)
    pair of 32-bit registers."""

    value: tuple[int, ...]
    input: tuple[int, ...]
    output: tuple[int, ...]
    result: tuple[int, ...]


X64 = RegisterConvention((U.UC_X86_REG_RCX,), (U.UC_X86_REG_RDX,), (U.UC_X86_REG_R8,),
                         (U.UC_X86_REG_RAX,))
X86 = RegisterConvention((U.UC_X86_REG_EDX, U.UC_X86_REG_EAX), (U.UC_X86_REG_EBX, U.UC_X86_REG_ECX),
                         (U.UC_X86_REG_EDI, U.UC_X86_REG_ESI), (U.UC_X86_REG_EDX, U.UC_X86_REG_EAX))
