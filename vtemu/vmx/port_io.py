"""Port I/O in VMX non-root operation, decided at the instruction's site before it runs.

Order of checks as the SDM gives it: the I/O permission check (CPL > IOPL consults the TSS
I/O bitmap, Vol. 1 18.5) has priority over the VM exit (25.1.1); then unconditional I/O
exiting or the I/O bitmaps decide whether the access exits (25.1.3). An exiting IN/OUT is
emulated by the hypervisor; a string instruction exits once and the hypervisor performs all
its iterations. A port the bitmap lets through reaches the device
bus directly, as an assigned device would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import capstone.x86_const as C
import unicorn.x86_const as U

from vtemu.machine.decode import Instruction
from vtemu.machine.vcpu import GuestException
from vtemu.vmx.qualifications import IoDirection, io_qualification
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
    cpu.exit_instruction(ExitReason.IO_INSTRUCTION, insn, qualification,
                         detail=f"{insn.mnemonic} {port:#x}")
