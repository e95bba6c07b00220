"""Port I/O in VMX non-root operation, decided at the instruction's site before it runs.

Order of checks as the SDM gives it: the I/O permission check (CPL > IOPL consults the TSS
I/O bitmap, Vol. 1 18.5) has priority over the VM exit (25.1.1); then unconditional I/O
exiting or the I/O bitmaps decide whether the access exits (25.1.3). An exiting IN/OUT is
emulated by the hypervisor; a string instruction exits once and the hypervisor performs all
its iterations. A port the bitmap lets through reaches the device
bus directly, as an assigned device would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import capstone.x86_const as C
import unicorn.x86_const as U

from vtemu.machine.cpustate import Seg
from vtemu.machine.decode import CodeMode, Instruction
from vtemu.machine.vcpu import GuestException
from vtemu.vmx.qualifications import (AddressSize, InsOutsInfo, IoDirection, SegmentRegister,
                                      io_qualification)
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.vmx.cpu import VmxCpu

GP = 13
_STRING_SIZES = {C.X86_INS_INSB: 1, C.X86_INS_INSW: 2, C.X86_INS_INSD: 4,
                 C.X86_INS_OUTSB: 1, C.X86_INS_OUTSW: 2, C.X86_INS_OUTSD: 4}
_STRING_IN = {C.X86_INS_INSB, C.X86_INS_INSW, C.X86_INS_INSD}


def port_operands(cpu: "VmxCpu", insn: Instruction) -> tuple[int, int, IoDirection]:
    """(port, size, direction) of IN/OUT: the port is an immediate or DX, the size that of
    the accumulator operand (SDM Vol. 2 IN, OUT)."""
    direction = IoDirection.IN if insn.id == C.X86_INS_IN else IoDirection.OUT
    port = insn.immediates[0] if insn.immediates else cpu.vcpu.read(U.UC_X86_REG_DX)
    accumulator = 0 if direction is IoDirection.IN else -1
    return port & 0xFFFF, insn.operand_sizes[accumulator], direction


def io_instruction(cpu: "VmxCpu", insn: Instruction) -> None:
    port, size, direction = port_operands(cpu, insn)
    if cpu.io_denied(port, size):
        raise GuestException(GP, 0)
    if not cpu.intercepts.io_exits(port, size):
        _access(cpu, port, size, direction)  # an assigned port: straight to the device
        cpu.complete(insn)
        return
    qualification = io_qualification(size, direction, port, immediate=bool(insn.immediates))
    verb = "in" if direction is IoDirection.IN else "out"
    cpu.exit_instruction(ExitReason.IO_INSTRUCTION, insn, qualification, detail=f"{verb} {port:#x}")


def _access(cpu: "VmxCpu", port: int, size: int, direction: IoDirection) -> None:
    if direction is IoDirection.IN:
        write_accumulator(cpu, size, cpu.ports.read(port, size))
    else:
        cpu.ports.write(port, size, cpu.vcpu.read(U.UC_X86_REG_RAX) & ((1 << (8 * size)) - 1))


def write_accumulator(cpu: "VmxCpu", size: int, value: int) -> None:
    """IN's destination: AL and AX keep the rest of RAX; EAX zero-extends (SDM Vol. 1 3.4.1.1)."""
    register = {1: U.UC_X86_REG_AL, 2: U.UC_X86_REG_AX, 4: U.UC_X86_REG_RAX}[size]
    cpu.vcpu.write(register, value & ((1 << (8 * size)) - 1))


@dataclass(frozen=True)
class StringOperand:
    """The memory side of INS/OUTS (SDM Vol. 2 INS, OUTS): ES:rDI for INS, DS:rSI (segment
    overridable) for OUTS, at the instruction's address size; rCX counts with REP."""

    segment: Seg
    pointer: int        # Unicorn register: SI/DI for 16-bit addresses, else RSI/RDI (written
    count: int          # whole, masked: 32-bit results zero-extend, SDM Vol. 1 3.4.1.1)
    base: int           # segment base (0 for ES/DS/SS in 64-bit mode)
    mask: int           # address-size mask

    def linear(self, cpu: "VmxCpu") -> int:
        return self.base + (cpu.vcpu.read(self.pointer) & self.mask)


_POINTERS = {(IoDirection.IN, 2): (U.UC_X86_REG_DI, U.UC_X86_REG_CX),
             (IoDirection.OUT, 2): (U.UC_X86_REG_SI, U.UC_X86_REG_CX)}
for _width in (4, 8):
    _POINTERS[IoDirection.IN, _width] = (U.UC_X86_REG_RDI, U.UC_X86_REG_RCX)
    _POINTERS[IoDirection.OUT, _width] = (U.UC_X86_REG_RSI, U.UC_X86_REG_RCX)
_SEGMENT_OF_REGISTER = {U.UC_X86_REG_ES: Seg.ES, U.UC_X86_REG_CS: Seg.CS, U.UC_X86_REG_SS: Seg.SS,
                        U.UC_X86_REG_DS: Seg.DS, U.UC_X86_REG_FS: Seg.FS, U.UC_X86_REG_GS: Seg.GS}
_ADDRESS_SIZES = {2: AddressSize.BITS16, 4: AddressSize.BITS32, 8: AddressSize.BITS64}


def string_operand(cpu: "VmxCpu", insn: Instruction, direction: IoDirection) -> StringOperand:
    width = insn.addr_size
    pointer, count = _POINTERS[direction, width]
    if direction is IoDirection.IN:
        segment = Seg.ES  # INS always writes ES:rDI (no override)
    else:
        segment = _SEGMENT_OF_REGISTER[insn.memory.segment] if insn.memory else Seg.DS
    flat = insn.mode is CodeMode.BITS64 and segment not in (Seg.FS, Seg.GS)
    base = 0 if flat else cpu.vcpu.segment(segment).base
    return StringOperand(segment, pointer, count, base, (1 << (8 * width)) - 1)


def string_io_instruction(cpu: "VmxCpu", insn: Instruction) -> None:
    size = _STRING_SIZES[insn.id]
    port = cpu.vcpu.read(U.UC_X86_REG_DX) & 0xFFFF
    direction = IoDirection.IN if insn.id in _STRING_IN else IoDirection.OUT
    if cpu.io_denied(port, size):
        raise GuestException(GP, 0)
    if not cpu.intercepts.io_exits(port, size):
        cpu.string_io_passthrough(insn, port, size, direction)
        return
    qualification = io_qualification(size, direction, port, string=True, rep=insn.has_rep)
    # With IA32_VMX_BASIC[54] the exit reports address size and segment (Table 27-8) and,
    # always, the linear address of the first iteration's element (SDM 27.2.1).
    operand = string_operand(cpu, insn, direction)
    info = InsOutsInfo(_ADDRESS_SIZES[insn.addr_size], SegmentRegister(int(operand.segment)))
    cpu.exit_instruction(ExitReason.IO_INSTRUCTION, insn, qualification,
                         info=info.encode() if cpu.caps.ins_outs_info else 0,
                         linear=operand.linear(cpu) & 0xFFFFFFFFFFFFFFFF,
                         detail=f"{insn.mnemonic} {port:#x}")
