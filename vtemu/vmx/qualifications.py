"""Typed exit qualifications (SDM 27.2.1) and VM-exit instruction information (SDM 27.2.4).

Each layout is a frozen dataclass whose fields carry their SDM bit range, so `encode()` builds
the value the CPU stores in the VMCS and `decode(raw)` gives handlers named fields instead of
bit picking. Table numbers are those of the 2016 edition of Vol. 3C (Tables 27-1 .. 27-7 for
qualifications, 27-8 .. 27-14 for instruction information); titles are given for each.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import IntEnum
from typing import Self

from vtemu.vmx.bits import BitStruct, bit, bit_range, bits, flag, place
from vtemu.vmx.interruption import ExceptionVector
from vtemu.vmx.reasons import ExitReason


class Gpr(IntEnum):
    """General-purpose register numbers used by qualifications and instruction information."""

    RAX = 0
    RCX = 1
    RDX = 2
    RBX = 3
    RSP = 4
    RBP = 5
    RSI = 6
    RDI = 7
    R8 = 8
    R9 = 9
    R10 = 10
    R11 = 11
    R12 = 12
    R13 = 13
    R14 = 14
    R15 = 15


# --- exit qualifications (27.2.1) --------------------------------------------------------------


@dataclass(frozen=True)
class DebugExceptionQualification(BitStruct):
    """Table 27-1 "Exit Qualification for Debug Exceptions" (#DB exits; DR6-like bits).

    `breakpoints` holds B3..B0 (bit n = breakpoint n matched). Bits 11 (bus lock) and 16 (RTM)
    come from later editions; vtemu never sets them but decodes them faithfully.
    """

    breakpoints: int = bits(3, 0, default=0)
    bus_lock: bool = flag(11)
    debug_register_access: bool = flag(13)  # BD
    single_step: bool = flag(14)  # BS
    rtm: bool = flag(16)


class TaskSwitchSource(IntEnum):
    """Table 27-2 bits 31:30."""

    CALL = 0
    IRET = 1
    JMP = 2
    TASK_GATE = 3


@dataclass(frozen=True)
class TaskSwitchQualification(BitStruct):
    """Table 27-2 "Exit Qualification for Task Switch"."""

    selector: int = bits(15, 0)
    source: TaskSwitchSource = bits(31, 30, TaskSwitchSource)


@dataclass(frozen=True)
class LinearAddressQualification(BitStruct):
    """INVLPG (and a #PF's CR2 value): the whole qualification is the linear address (27.2.1).

    Bits 63:32 are cleared when the guest was not in 64-bit mode; the caller supplies the value
    already truncated, as the CPU would.
    """

    linear_address: int = bits(63, 0)


class CrAccessType(IntEnum):
    """Table 27-3 bits 5:4."""

    MOV_TO_CR = 0
    MOV_FROM_CR = 1
    CLTS = 2
    LMSW = 3


@dataclass(frozen=True)
class CrAccessQualification(BitStruct):
    """Table 27-3 "Exit Qualification for Control-Register Accesses".

    `cr` is 0 for CLTS and LMSW; `gpr` is meaningful only for MOV CR; `lmsw_memory_operand` and
    `lmsw_source_data` only for LMSW (the CPU clears them otherwise, and so must callers).
    """

    cr: int = bits(3, 0)
    access_type: CrAccessType = bits(5, 4, CrAccessType)
    lmsw_memory_operand: bool = flag(6)
    gpr: Gpr = bits(11, 8, Gpr, default=Gpr.RAX)
    lmsw_source_data: int = bits(31, 16, default=0)

    def __post_init__(self) -> None:
        no_register = self.access_type in (CrAccessType.CLTS, CrAccessType.LMSW)
        if no_register and (self.cr != 0 or self.gpr != Gpr.RAX):
            raise ValueError("Table 27-3: CLTS and LMSW report CR number 0 and no register")
        if self.access_type is not CrAccessType.LMSW and (self.lmsw_memory_operand or self.lmsw_source_data):
            raise ValueError("Table 27-3: LMSW fields are cleared for MOV CR and CLTS")


class MovDrDirection(IntEnum):
    """Table 27-4 bit 4."""

    TO_DR = 0
    FROM_DR = 1


@dataclass(frozen=True)
class MovDrQualification(BitStruct):
    """Table 27-4 "Exit Qualification for MOV DR"."""

    dr: int = bits(2, 0)
    direction: MovDrDirection = bits(4, 4, MovDrDirection)
    gpr: Gpr = bits(11, 8, Gpr)


class IoDirection(IntEnum):
    """Table 27-5 bit 3."""

    OUT = 0
    IN = 1


@dataclass(frozen=True)
class IoQualification(BitStruct):
    """Table 27-5 "Exit Qualification for I/O Instructions".

    `size` is in bytes (1, 2 or 4); the field stores size - 1 in bits 2:0 (0, 1 or 3).
    `immediate` is bit 6, the operand encoding: 0 = port in DX, 1 = immediate port operand.
    """

    size: int = bits(2, 0, lambda v: v + 1, to_raw=lambda size: size - 1)
    direction: IoDirection = bits(3, 3, IoDirection)
    string: bool = flag(4)
    rep: bool = flag(5)
    immediate: bool = flag(6)
    port: int = bits(31, 16, default=0)

    def __post_init__(self) -> None:
        if self.size not in (1, 2, 4):
            raise ValueError(f"Table 27-5: access size {self.size} is not 1, 2 or 4 bytes")
        if self.immediate and self.string:
            raise ValueError("INS/OUTS always take the port from DX")


@functools.lru_cache(maxsize=4096)
def io_qualification(size: int, direction: IoDirection, port: int, *, string: bool = False,
                     rep: bool = False, immediate: bool = False) -> int:
    """IoQualification(...).encode(), memoized: I/O exits are the most frequent of all."""
    return IoQualification(size, direction, string, rep, immediate, port).encode()


class ApicAccessType(IntEnum):
    """Table 27-6 bits 15:12."""

    LINEAR_READ = 0
    LINEAR_WRITE = 1
    LINEAR_FETCH = 2
    LINEAR_EVENT_DELIVERY = 3
    GUEST_PHYSICAL_EVENT_DELIVERY = 10
    GUEST_PHYSICAL_INSTRUCTION = 15


@dataclass(frozen=True)
class ApicAccessQualification(BitStruct):
    """Table 27-6 "Exit Qualification for APIC-Access VM Exits from Linear Accesses and
    Guest-Physical Accesses". `offset` is undefined for guest-physical accesses (vtemu writes 0).
    Bit 16 (asynchronous, not event delivery) is from later editions.
    """

    offset: int = bits(11, 0)
    access_type: ApicAccessType = bits(15, 12, ApicAccessType)
    asynchronous: bool = flag(16)


@dataclass(frozen=True)
class EptViolationQualification(BitStruct):
    """Table 27-7 "Exit Qualification for EPT Violations".

    Bits 0-2: the access that faulted. Bits 3-6: the AND of the R/W/X (and user-X) bits of the
    EPT entries used for the translation. Bit 7: the guest-linear-address field is valid; bit 8
    (only when bit 7 is 1): 1 = the access was to the translation of the linear address,
    0 = to a guest paging-structure entry. Bits 9-11 (advanced information, IA32_VMX_EPT_VPID_CAP
    bit 22, only when bits 7 and 8 are 1): user-mode, writable and execute-disable linear address.
    Bit 12: NMI unblocking due to IRET. Bits 13-16 (CET, HLAT, asynchronous) are not modelled.
    """

    read: bool = flag(0)
    write: bool = flag(1)
    fetch: bool = flag(2)
    readable: bool = flag(3)
    writable: bool = flag(4)
    executable: bool = flag(5)
    user_executable: bool = flag(6)
    linear_address_valid: bool = flag(7)
    translated_access: bool = flag(8)
    user_mode_linear: bool = flag(9)
    writable_linear: bool = flag(10)
    execute_disable_linear: bool = flag(11)
    nmi_unblocking: bool = flag(12)

    def __post_init__(self) -> None:
        if self.translated_access and not self.linear_address_valid:
            raise ValueError("Table 27-7: bit 8 is reserved when bit 7 (linear address valid) is 0")
        advanced = self.user_mode_linear or self.writable_linear or self.execute_disable_linear
        if advanced and not self.translated_access:
            raise ValueError("Table 27-7: bits 9-11 are reported only when bits 7 and 8 are 1")


# --- VM-exit instruction information (27.2.4) ------------------------------------------------


class AddressSize(IntEnum):
    """Instruction-information bits 9:7."""

    BITS16 = 0
    BITS32 = 1
    BITS64 = 2


class SegmentRegister(IntEnum):
    """Instruction-information bits 17:15 (the Sreg encoding)."""

    ES = 0
    CS = 1
    SS = 2
    DS = 3
    FS = 4
    GS = 5


_MEM_REG_BIT = 10  # Tables 27-11 and 27-14: 0 = memory operand, 1 = register operand


@dataclass(frozen=True)
class MemoryOperand:
    """The memory-operand description shared by Tables 27-9 .. 27-11, 27-13 and 27-14.

    Scaling (bits 1:0) is the log2 of the index scale; it is undefined without an index register
    and vtemu then writes 0. `index`/`base` None is the "invalid" bit (22 / 27) set. The address
    displacement itself goes in the exit qualification (27.2.1).
    """

    address_size: AddressSize
    segment: SegmentRegister
    base: Gpr | None = None
    index: Gpr | None = None
    scaling: int = 0

    def __post_init__(self) -> None:
        if self.index is None and self.scaling:
            raise ValueError("scaling needs an index register")

    @property
    def scale(self) -> int:
        return 1 << self.scaling

    def encode(self) -> int:
        return (
            place(self.scaling, 1, 0)
            | place(self.address_size, 9, 7)
            | place(self.segment, 17, 15)
            | _encode_optional_register(self.index, 21, 18, 22)
            | _encode_optional_register(self.base, 26, 23, 27)
        )

    @classmethod
    def decode(cls, raw: int) -> MemoryOperand:
        index = None if bit(raw, 22) else Gpr(bit_range(raw, 21, 18))
        return cls(
            address_size=AddressSize(bit_range(raw, 9, 7)),
            segment=SegmentRegister(bit_range(raw, 17, 15)),
            base=None if bit(raw, 27) else Gpr(bit_range(raw, 26, 23)),
            index=index,
            scaling=bit_range(raw, 1, 0) if index is not None else 0,
        )


def _encode_optional_register(register: Gpr | None, high: int, low: int, invalid_bit: int) -> int:
    return 1 << invalid_bit if register is None else place(register, high, low)


Operand = MemoryOperand | Gpr


def _encode_operand(operand: Operand) -> int:
    """Mem/Reg-form operands (Tables 27-11, 27-14): a register goes in Reg1 (bits 6:3)."""
    if isinstance(operand, MemoryOperand):
        return operand.encode()
    return place(operand, 6, 3) | 1 << _MEM_REG_BIT


def _decode_operand(raw: int) -> Operand:
    return Gpr(bit_range(raw, 6, 3)) if bit(raw, _MEM_REG_BIT) else MemoryOperand.decode(raw)


@dataclass(frozen=True)
class InsOutsInfo:
    """Table 27-8 "... as Used for INS and OUTS" (reported when IA32_VMX_BASIC[54] = 1).

    The segment is undefined for INS (which always writes ES:rDI); vtemu reports ES.
    """

    address_size: AddressSize
    segment: SegmentRegister = SegmentRegister.DS

    def encode(self) -> int:
        return place(self.address_size, 9, 7) | place(self.segment, 17, 15)

    @classmethod
    def decode(cls, raw: int) -> Self:
        return cls(AddressSize(bit_range(raw, 9, 7)), SegmentRegister(bit_range(raw, 17, 15)))


@dataclass(frozen=True)
class InvalidationInfo:
    """Table 27-9 "... as Used for INVEPT, INVPCID, and INVVPID": memory operand + type register."""

    operand: MemoryOperand
    reg2: Gpr

    def encode(self) -> int:
        return self.operand.encode() | place(self.reg2, 31, 28)

    @classmethod
    def decode(cls, raw: int) -> Self:
        return cls(MemoryOperand.decode(raw), Gpr(bit_range(raw, 31, 28)))


class DescriptorTableInstruction(IntEnum):
    """Table 27-10 bits 29:28."""

    SGDT = 0
    SIDT = 1
    LGDT = 2
    LIDT = 3


@dataclass(frozen=True)
class DescriptorTableInfo:
    """Table 27-10 "... as Used for LIDT, LGDT, SIDT, or SGDT".

    `operand_size_32` is bit 11 (0 = 16-bit, 1 = 32-bit operand size; undefined in 64-bit mode).
    """

    operand: MemoryOperand
    instruction: DescriptorTableInstruction
    operand_size_32: bool = False

    def encode(self) -> int:
        return self.operand.encode() | int(self.operand_size_32) << 11 | place(self.instruction, 29, 28)

    @classmethod
    def decode(cls, raw: int) -> Self:
        instruction = DescriptorTableInstruction(bit_range(raw, 29, 28))
        return cls(MemoryOperand.decode(raw), instruction, operand_size_32=bit(raw, 11))


class LdtrTrInstruction(IntEnum):
    """Table 27-11 bits 29:28."""

    SLDT = 0
    STR = 1
    LLDT = 2
    LTR = 3


@dataclass(frozen=True)
class LdtrTrInfo:
    """Table 27-11 "... as Used for LLDT, LTR, SLDT, and STR": a register or memory operand."""

    operand: Operand
    instruction: LdtrTrInstruction

    def encode(self) -> int:
        return _encode_operand(self.operand) | place(self.instruction, 29, 28)

    @classmethod
    def decode(cls, raw: int) -> Self:
        return cls(_decode_operand(raw), LdtrTrInstruction(bit_range(raw, 29, 28)))


class OperandSize(IntEnum):
    """Table 27-12 bits 12:11."""

    BITS16 = 0
    BITS32 = 1
    BITS64 = 2


@dataclass(frozen=True)
class RdrandRdseedInfo:
    """Table 27-12 "... as Used for RDRAND and RDSEED": destination register and operand size."""

    destination: Gpr
    operand_size: OperandSize

    def encode(self) -> int:
        return place(self.destination, 6, 3) | place(self.operand_size, 12, 11)

    @classmethod
    def decode(cls, raw: int) -> Self:
        return cls(Gpr(bit_range(raw, 6, 3)), OperandSize(bit_range(raw, 12, 11)))


@dataclass(frozen=True)
class VmxPointerInfo:
    """Table 27-13 "... as Used for VMCLEAR, VMPTRLD, VMPTRST, VMXON, XRSTORS, and XSAVES"."""

    operand: MemoryOperand

    def encode(self) -> int:
        return self.operand.encode()

    @classmethod
    def decode(cls, raw: int) -> Self:
        return cls(MemoryOperand.decode(raw))


@dataclass(frozen=True)
class VmreadVmwriteInfo:
    """Table 27-14 "... as Used for VMREAD and VMWRITE".

    `operand` is the VMREAD destination / VMWRITE source (register in Reg1, or memory);
    `reg2` holds the field encoding.
    """

    operand: Operand
    reg2: Gpr

    def encode(self) -> int:
        return _encode_operand(self.operand) | place(self.reg2, 31, 28)

    @classmethod
    def decode(cls, raw: int) -> Self:
        return cls(_decode_operand(raw), Gpr(bit_range(raw, 31, 28)))


# --- one table from exit reason to layout ----------------------------------------------------

Qualification = (
    DebugExceptionQualification
    | TaskSwitchQualification
    | LinearAddressQualification
    | CrAccessQualification
    | MovDrQualification
    | IoQualification
    | ApicAccessQualification
    | EptViolationQualification
)

QUALIFICATION_LAYOUTS: dict[ExitReason, type[Qualification]] = {
    ExitReason.TASK_SWITCH: TaskSwitchQualification,
    ExitReason.INVLPG: LinearAddressQualification,
    ExitReason.CR_ACCESS: CrAccessQualification,
    ExitReason.MOV_DR: MovDrQualification,
    ExitReason.IO_INSTRUCTION: IoQualification,
    ExitReason.APIC_ACCESS: ApicAccessQualification,
    ExitReason.EPT_VIOLATION: EptViolationQualification,
}

# Exception exits whose qualification has a layout (27.2.1): #DB and #PF, by vector.
_EXCEPTION_LAYOUTS: dict[int, type[Qualification]] = {
    ExceptionVector.DB: DebugExceptionQualification,
    ExceptionVector.PF: LinearAddressQualification,
}


def decode_qualification(reason: ExitReason, raw: int, *, vector: int | None = None) -> Qualification | None:
    """The typed qualification of an exit, or None if the SDM gives this exit no bit layout.

    Exception exits need the vector (from the VM-exit interruption information): #DB carries
    Table 27-1 bits, #PF the faulting linear address.
    """
    if reason is ExitReason.EXCEPTION_OR_NMI:
        layout = _EXCEPTION_LAYOUTS.get(vector) if vector is not None else None
    else:
        layout = QUALIFICATION_LAYOUTS.get(reason)
    return layout.decode(raw) if layout is not None else None


InstructionInfo = (
    InsOutsInfo
    | InvalidationInfo
    | DescriptorTableInfo
    | LdtrTrInfo
    | RdrandRdseedInfo
    | VmxPointerInfo
    | VmreadVmwriteInfo
)

INSTRUCTION_INFO_LAYOUTS: dict[ExitReason, type[InstructionInfo]] = {
    ExitReason.IO_INSTRUCTION: InsOutsInfo,  # only for INS/OUTS (string I/O)
    ExitReason.INVEPT: InvalidationInfo,
    ExitReason.INVPCID: InvalidationInfo,
    ExitReason.INVVPID: InvalidationInfo,
    ExitReason.GDTR_IDTR_ACCESS: DescriptorTableInfo,
    ExitReason.LDTR_TR_ACCESS: LdtrTrInfo,
    ExitReason.RDRAND: RdrandRdseedInfo,
    ExitReason.RDSEED: RdrandRdseedInfo,
    ExitReason.VMCLEAR: VmxPointerInfo,
    ExitReason.VMPTRLD: VmxPointerInfo,
    ExitReason.VMPTRST: VmxPointerInfo,
    ExitReason.VMXON: VmxPointerInfo,
    ExitReason.XRSTORS: VmxPointerInfo,
    ExitReason.XSAVES: VmxPointerInfo,
    ExitReason.VMREAD: VmreadVmwriteInfo,
    ExitReason.VMWRITE: VmreadVmwriteInfo,
}
