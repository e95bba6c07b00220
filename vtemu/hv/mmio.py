"""Emulating the one instruction that touched MMIO, open bus or ROM (an EPT violation).

Hypervisors emulate the faulting instruction rather than map device memory (KVM's x86
emulator does the same for MMIO). vtemu covers the moves compilers and hand-written
drivers use for device registers: MOV to and from memory (register or immediate source),
MOVZX, MOVSX and MOVSXD loads. Anything else on such memory ends the run with a clear
message instead of guessing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import capstone.x86_const as C

from vtemu.machine.decode import CodeMode
from vtemu.vmx.instructions import GPR_OF_REGISTER, REGISTER_OF_GPR

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit

_LOADS_ZERO = {C.X86_INS_MOVZX}
_LOADS_SIGN = {C.X86_INS_MOVSX, C.X86_INS_MOVSXD}


class EmulationError(Exception):
    """The instruction is not one vtemu emulates on device or unbacked memory."""


def emulate_access(cpu: "VmxCpu", partition: "Partition", exit: "VmExit") -> None:
    gpa = exit.guest_physical or 0
    insn = cpu.vcpu.decode_at(exit.guest_rip)
    if insn is None or insn.memory is None:
        raise EmulationError("cannot decode the faulting instruction")
    size = insn.memory.size
    if insn.id == C.X86_INS_MOV and insn.memory_position == 0:
        source = insn.immediates[0] if insn.immediates else cpu.vcpu.read(insn.registers[0])
        partition.physical_write(gpa, size, source & ((1 << (8 * size)) - 1))
    elif insn.id in (C.X86_INS_MOV, *_LOADS_ZERO, *_LOADS_SIGN) and insn.memory_position == 1:
        value = partition.physical_read(gpa, size)
        destination = insn.registers[0]
        width = insn.operand_sizes[0]
        if insn.id in _LOADS_SIGN and value >> (8 * size - 1):
            value -= 1 << (8 * size)
        value &= (1 << (8 * width)) - 1
        if width == 4 and insn.mode is CodeMode.BITS64:
            destination = _full_register(destination)  # 32-bit writes zero-extend (SDM Vol. 1 3.4.1.1)
        cpu.vcpu.write(destination, value)
    else:
        raise EmulationError(f"`{insn}` is not emulated on MMIO, unbacked or ROM memory")
    cpu.complete(insn)


def _full_register(register: int) -> int:
    return REGISTER_OF_GPR[GPR_OF_REGISTER[register]]
