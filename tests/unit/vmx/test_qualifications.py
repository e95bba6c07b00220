"""Exit qualifications (SDM 27.2.1) and VM-exit instruction information (SDM 27.2.4).

Expected values are computed by hand from the SDM tables; each case says how.
"""

from __future__ import annotations

import pytest

from vtemu.vmx.qualifications import (
    AddressSize,
    ApicAccessQualification,
    ApicAccessType,
    CrAccessQualification,
    CrAccessType,
    DebugExceptionQualification,
    DescriptorTableInfo,
    DescriptorTableInstruction,
    EptViolationQualification,
    Gpr,
    InsOutsInfo,
    InstructionInfo,
    InvalidationInfo,
    IoDirection,
    IoQualification,
    LdtrTrInfo,
    LdtrTrInstruction,
    LinearAddressQualification,
    MemoryOperand,
    MovDrDirection,
    MovDrQualification,
    OperandSize,
    RdrandRdseedInfo,
    SegmentRegister,
    TaskSwitchQualification,
    TaskSwitchSource,
    VmreadVmwriteInfo,
    VmxPointerInfo,
    decode_qualification,
)
from vtemu.vmx.reasons import ExitReason

# --- Table 27-5: I/O instructions ----------------------------------------------------------------
# bits 2:0 size-1, bit 3 direction (1 = IN), bit 4 string, bit 5 REP, bit 6 operand encoding
# (0 = DX, 1 = immediate), bits 31:16 port.
IO_CASES = [
    # out dx, al with DX = 3F8h: size 1 -> 0, OUT -> 0, port from DX -> bit 6 = 0. The port goes to
    # bits 31:16, so the value is 03F8_0000h. (03F8_0040h would claim an immediate operand, but
    # OUT imm8 cannot even encode port 3F8h.)
    (IoQualification(size=1, direction=IoDirection.OUT, port=0x3F8), 0x03F8_0000),
    # in al, 60h: size 0, IN (bit 3 = 08h), immediate (bit 6 = 40h) -> 48h, port 0060h.
    (IoQualification(size=1, direction=IoDirection.IN, immediate=True, port=0x60), 0x0060_0048),
    # rep outsw with DX = 1F0h: size 2 -> 1, string (10h), REP (20h) -> 31h.
    (IoQualification(size=2, direction=IoDirection.OUT, string=True, rep=True, port=0x1F0), 0x01F0_0031),
    # in eax, dx with DX = CFCh: size 4 -> 3, IN (08h) -> 0Bh.
    (IoQualification(size=4, direction=IoDirection.IN, port=0xCFC), 0x0CFC_000B),
    # out 0F4h, eax (isa-debug-exit): size 3 | immediate 40h -> 43h.
    (IoQualification(size=4, direction=IoDirection.OUT, immediate=True, port=0xF4), 0x00F4_0043),
]


@pytest.mark.parametrize(
    ("qualification", "raw"), IO_CASES, ids=lambda v: hex(v) if isinstance(v, int) else None
)
def test_io_qualification(qualification: IoQualification, raw: int) -> None:
    assert qualification.encode() == raw
    assert IoQualification.decode(raw) == qualification


@pytest.mark.parametrize("kwargs", [{"size": 3}, {"size": 8}, {"size": 1, "string": True, "immediate": True}])
def test_io_qualification_rejects_impossible_accesses(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        IoQualification(direction=IoDirection.IN, **kwargs)


def test_io_port_must_fit() -> None:
    with pytest.raises(ValueError):
        IoQualification(size=1, direction=IoDirection.OUT, port=0x1_0000).encode()


# --- Table 27-3: control-register accesses ----------------------------------------------------
# bits 3:0 CR, 5:4 type (0 MOV to, 1 MOV from, 2 CLTS, 3 LMSW), 6 LMSW memory operand,
# 11:8 GPR, 31:16 LMSW source data.
CR_CASES = [
    (CrAccessQualification(cr=3, access_type=CrAccessType.MOV_TO_CR, gpr=Gpr.RAX), 0x003),  # mov cr3, rax
    (CrAccessQualification(cr=3, access_type=CrAccessType.MOV_FROM_CR, gpr=Gpr.RBX), 0x313),  # mov rbx, cr3
    (CrAccessQualification(cr=8, access_type=CrAccessType.MOV_TO_CR, gpr=Gpr.R15), 0xF08),  # mov cr8, r15
    (CrAccessQualification(cr=0, access_type=CrAccessType.CLTS), 0x020),
    (
        CrAccessQualification(cr=0, access_type=CrAccessType.LMSW, lmsw_source_data=0x11),
        0x0011_0030,
    ),  # lmsw ax
    (
        CrAccessQualification(
            cr=0, access_type=CrAccessType.LMSW, lmsw_memory_operand=True, lmsw_source_data=0x1
        ),
        0x0001_0070,
    ),
]


@pytest.mark.parametrize(
    ("qualification", "raw"), CR_CASES, ids=lambda v: hex(v) if isinstance(v, int) else None
)
def test_cr_access_qualification(qualification: CrAccessQualification, raw: int) -> None:
    assert qualification.encode() == raw
    assert CrAccessQualification.decode(raw) == qualification


def test_cr_access_field_rules() -> None:
    with pytest.raises(ValueError):
        CrAccessQualification(cr=0, access_type=CrAccessType.CLTS, gpr=Gpr.RCX)
    with pytest.raises(ValueError):
        CrAccessQualification(cr=4, access_type=CrAccessType.MOV_TO_CR, lmsw_source_data=1)


# --- Table 27-4: MOV DR (2:0 DR, 4 direction (1 = from DR), 11:8 GPR) --------------------------
@pytest.mark.parametrize(
    ("qualification", "raw"),
    [
        (MovDrQualification(dr=7, direction=MovDrDirection.TO_DR, gpr=Gpr.RCX), 0x107),  # mov dr7, rcx
        (MovDrQualification(dr=6, direction=MovDrDirection.FROM_DR, gpr=Gpr.RAX), 0x016),  # mov rax, dr6
        (MovDrQualification(dr=0, direction=MovDrDirection.FROM_DR, gpr=Gpr.R9), 0x910),
    ],
)
def test_mov_dr_qualification(qualification: MovDrQualification, raw: int) -> None:
    assert qualification.encode() == raw
    assert MovDrQualification.decode(raw) == qualification


# --- Tables 27-1, 27-2, INVLPG, 27-6 -----------------------------------------------------------
def test_debug_exception_qualification() -> None:
    assert DebugExceptionQualification(single_step=True).encode() == 0x4000  # BS, bit 14
    assert DebugExceptionQualification(breakpoints=0b0101).encode() == 0x5  # B0 and B2
    assert DebugExceptionQualification(debug_register_access=True).encode() == 0x2000  # BD, bit 13
    assert DebugExceptionQualification.decode(0x1_6001) == DebugExceptionQualification(
        breakpoints=1, debug_register_access=True, single_step=True, rtm=True
    )


def test_task_switch_qualification() -> None:
    jmp = TaskSwitchQualification(selector=0x28, source=TaskSwitchSource.JMP)  # source 2 in bits 31:30
    assert jmp.encode() == 0x8000_0028
    assert TaskSwitchQualification.decode(0xC000_0030) == TaskSwitchQualification(
        0x30, TaskSwitchSource.TASK_GATE
    )


def test_linear_address_qualification() -> None:
    assert LinearAddressQualification.decode(0xFFFF_8000_0000_1000).linear_address == 0xFFFF_8000_0000_1000


def test_apic_access_qualification() -> None:
    write = ApicAccessQualification(offset=0x300, access_type=ApicAccessType.LINEAR_WRITE)  # ICR low
    assert write.encode() == 0x1300
    assert ApicAccessQualification.decode(0xF000).access_type is ApicAccessType.GUEST_PHYSICAL_INSTRUCTION


# --- Table 27-7: EPT violations ----------------------------------------------------------------
def test_ept_violation_write_to_read_only_page() -> None:
    """A guest write through a translated linear address to a page mapped R+X:
    write (bit 1) | readable (3) | executable (5) | linear valid (7) | translation (8) = 1AAh."""
    violation = EptViolationQualification(
        read=False,
        write=True,
        fetch=False,
        readable=True,
        writable=False,
        executable=True,
        user_executable=False,
        linear_address_valid=True,
        translated_access=True,
    )
    assert violation.encode() == 0x1AA
    assert EptViolationQualification.decode(0x1AA) == violation


def test_ept_violation_during_guest_page_walk() -> None:
    """A read of a guest paging-structure entry in an unmapped page: read (0) | linear valid (7)."""
    walk = EptViolationQualification.decode(0x81)
    assert walk.read and walk.linear_address_valid and not walk.translated_access
    assert EptViolationQualification.decode(0x1000).nmi_unblocking


@pytest.mark.parametrize("raw", [0x100, 0x280], ids=hex)
def test_ept_violation_reserved_combinations(raw: int) -> None:
    with pytest.raises(ValueError):
        EptViolationQualification.decode(raw)


# --- 27.2.4 instruction information ------------------------------------------------------------
DS64 = dict(address_size=AddressSize.BITS64, segment=SegmentRegister.DS)


@pytest.mark.parametrize(
    ("info", "raw"),
    [
        # outsb, 32-bit addressing, DS: address size 1 << 7, segment 3 << 15.
        (InsOutsInfo(AddressSize.BITS32, SegmentRegister.DS), 0x0001_8080),
        # vmptrld [rbx + rsi*8]: scaling 3, 64-bit (2 << 7), DS (3 << 15),
        # index RSI (6 << 18), base RBX (3 << 23).
        (VmxPointerInfo(MemoryOperand(**DS64, base=Gpr.RBX, index=Gpr.RSI, scaling=3)), 0x0199_8103),
        # lgdt [rax]: no index (bit 22), base RAX, 64-bit, DS, identity LGDT (2 << 28).
        (
            DescriptorTableInfo(MemoryOperand(**DS64, base=Gpr.RAX), DescriptorTableInstruction.LGDT),
            0x2041_8100,
        ),
        # lidt [bx] in 16-bit code with a 32-bit operand size (bit 11): address size 0.
        (
            DescriptorTableInfo(
                MemoryOperand(AddressSize.BITS16, SegmentRegister.DS, base=Gpr.RBX),
                DescriptorTableInstruction.LIDT,
                operand_size_32=True,
            ),
            0x31C1_8800,
        ),
        # ltr ax: register form (bit 10), Reg1 = RAX, identity LTR (3 << 28).
        (LdtrTrInfo(Gpr.RAX, LdtrTrInstruction.LTR), 0x3000_0400),
        # sldt [rbp]: 64-bit (1 << 8), SS (2 << 15), no index (bit 22), base RBP (5 << 23), identity SLDT 0.
        (
            LdtrTrInfo(
                MemoryOperand(AddressSize.BITS64, SegmentRegister.SS, base=Gpr.RBP), LdtrTrInstruction.SLDT
            ),
            0x02C1_0100,
        ),
        # invept rdx, [rip+disp]: no base (bit 27), no index (bit 22), 64-bit, DS, Reg2 = RDX (2 << 28).
        (InvalidationInfo(MemoryOperand(**DS64), Gpr.RDX), 0x2841_8100),
        # vmread rax, rcx: destination register RAX (bit 10, Reg1 0), field encoding in Reg2 = RCX.
        (VmreadVmwriteInfo(Gpr.RAX, Gpr.RCX), 0x1000_0400),
        # vmwrite r8, [rsp+8]: memory source via SS (2 << 15), base RSP (4 << 23), no index,
        # Reg2 = R8 (8 << 28).
        (
            VmreadVmwriteInfo(MemoryOperand(AddressSize.BITS64, SegmentRegister.SS, base=Gpr.RSP), Gpr.R8),
            0x8241_0100,
        ),
        # rdrand eax: Reg1 = RAX, operand size 32 (1 << 11).
        (RdrandRdseedInfo(Gpr.RAX, OperandSize.BITS32), 0x0000_0800),
        (RdrandRdseedInfo(Gpr.R12, OperandSize.BITS64), 12 << 3 | 2 << 11),
    ],
    ids=lambda v: hex(v) if isinstance(v, int) else type(v).__name__,
)
def test_instruction_information(info: InstructionInfo, raw: int) -> None:
    assert info.encode() == raw
    assert type(info).decode(raw) == info


def test_memory_operand_scaling_needs_an_index() -> None:
    with pytest.raises(ValueError):
        MemoryOperand(**DS64, base=Gpr.RAX, scaling=2)
    decoded = MemoryOperand.decode(0x0001_8103 | 1 << 22)  # undefined scaling bits without an index
    assert decoded.index is None and decoded.scaling == 0 and decoded.scale == 1


# --- dispatch --------------------------------------------------------------------------------
def test_decode_qualification_by_reason() -> None:
    assert decode_qualification(ExitReason.IO_INSTRUCTION, 0x03F8_0000) == IO_CASES[0][0]
    assert isinstance(decode_qualification(ExitReason.CR_ACCESS, 0x3), CrAccessQualification)
    assert decode_qualification(ExitReason.EXCEPTION_OR_NMI, 0x4000, vector=1) == DebugExceptionQualification(
        single_step=True
    )
    assert decode_qualification(ExitReason.EXCEPTION_OR_NMI, 0xB800, vector=14) == LinearAddressQualification(
        0xB800
    )
    assert decode_qualification(ExitReason.EXCEPTION_OR_NMI, 0, vector=13) is None
    assert decode_qualification(ExitReason.CPUID, 0) is None
