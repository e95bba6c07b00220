"""I/O instructions (30): IN/OUT to the partition's port bus, and INS/OUTS emulated whole.

A string instruction exits once (SDM 25.1.3); the hypervisor then performs every iteration
as the processor would (SDM Vol. 2 INS/OUTS, REP): element size from the qualification,
addresses DS:rSI (segment-overridable) or ES:rDI at the instruction's address size, rSI/rDI
stepping by DF, rCX counting down. Memory is touched a page at a time; a page fault stops
the instruction with the completed iterations retired and RIP still at it, so REP resumes
where it left off once the guest has handled the fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import unicorn.x86_const as U

from vtemu.hv.handlers.common import PF, done, inject_exception
from vtemu.hv.outcome import RESUME, Outcome
from vtemu.machine.cpustate import Seg
from vtemu.machine.decode import CodeMode, Instruction
from vtemu.machine.translation import GuestPageFault, MemoryAccess
from vtemu.vmx.port_io import write_accumulator
from vtemu.vmx.qualifications import IoDirection, IoQualification
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import PortSpace, VmxCpu
    from vtemu.vmx.exit import VmExit

RFLAGS_DF = 1 << 10
_SEGMENTS = {U.UC_X86_REG_ES: Seg.ES, U.UC_X86_REG_CS: Seg.CS, U.UC_X86_REG_SS: Seg.SS,
             U.UC_X86_REG_DS: Seg.DS, U.UC_X86_REG_FS: Seg.FS, U.UC_X86_REG_GS: Seg.GS}


def handle_io(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    io = exit.decoded(IoQualification)
    if io.string:
        assert exit.instruction is not None
        if emulate_string_io(cpu, partition.ports, exit.instruction, io.port, io.size,
                             io.direction, io.rep):
            return done(exit, cpu)
        return RESUME
    if io.direction is IoDirection.IN:
        write_accumulator(cpu, io.size, partition.ports.read(io.port, io.size))
    else:
        value = cpu.vcpu.read(U.UC_X86_REG_RAX) & ((1 << (8 * io.size)) - 1)
        partition.ports.write(io.port, io.size, value)
    return done(exit, cpu)


@dataclass
class _StringState:
    pointer: int      # the register holding rSI or rDI, written whole (see _register_pair)
    count_reg: int
    base: int         # segment base
    mask: int         # address-size mask
    step: int         # +size or -size (DF)


# SDM Vol. 1 3.4.1.1: a 32-bit result zero-extends into the 64-bit register, a 16-bit one
# leaves bits 63:16 alone; so 16-bit address size updates SI/CX, wider ones RSI/RCX (masked).
_REGISTERS = {(IoDirection.IN, 2): (U.UC_X86_REG_DI, U.UC_X86_REG_CX),
              (IoDirection.OUT, 2): (U.UC_X86_REG_SI, U.UC_X86_REG_CX)}
for _width in (4, 8):
    _REGISTERS[IoDirection.IN, _width] = (U.UC_X86_REG_RDI, U.UC_X86_REG_RCX)
    _REGISTERS[IoDirection.OUT, _width] = (U.UC_X86_REG_RSI, U.UC_X86_REG_RCX)


def _string_state(cpu: "VmxCpu", insn: Instruction, size: int, direction: IoDirection) -> _StringState:
    width = insn.addr_size
    pointer, count = _REGISTERS[direction, width]
    if direction is IoDirection.IN:
        segment = Seg.ES  # INS always writes ES:rDI (no override)
    else:
        segment = _SEGMENTS[insn.memory.segment] if insn.memory else Seg.DS
    flat = insn.mode is CodeMode.BITS64 and segment not in (Seg.FS, Seg.GS)
    base = 0 if flat else cpu.vcpu.segment(segment).base
    step = -size if cpu.vcpu.read(U.UC_X86_REG_RFLAGS) & RFLAGS_DF else size
    return _StringState(pointer, count, base, (1 << (8 * width)) - 1, step)


def emulate_string_io(cpu: "VmxCpu", ports: "PortSpace", insn: Instruction, port: int, size: int,
                      direction: IoDirection, rep: bool) -> bool:
    """Perform the iterations; True when the instruction completed, False after injecting #PF."""
    state = _string_state(cpu, insn, size, direction)
    vcpu = cpu.vcpu
    remaining = vcpu.read(state.count_reg) & state.mask if rep else 1
    user = vcpu.context.load().cpl == 3
    while remaining:
        offset = vcpu.read(state.pointer) & state.mask
        first = state.base + offset          # the element the next iteration touches
        batch = _elements_in_run(first, offset, state, size, remaining)
        lowest = first if state.step > 0 else first - (batch - 1) * size
        try:
            _transfer(cpu, ports, direction, port, size, lowest, batch, state.step < 0, user)
        except GuestPageFault as fault:
            # CR2 names the faulting iteration's element, whichever end of the run it is.
            same_page = fault.linear >> 12 == first >> 12
            vcpu.write(U.UC_X86_REG_CR2, first if same_page else fault.linear)
            inject_exception(cpu, PF, fault.error_code)
            return False
        vcpu.write(state.pointer, (offset + batch * state.step) & state.mask)
        remaining -= batch
        if rep:
            vcpu.write(state.count_reg, remaining)
    return True


def _elements_in_run(linear: int, offset: int, state: _StringState, size: int, remaining: int) -> int:
    """How many elements from `linear` stay within its page and do not wrap the offset (at least one)."""
    if state.step > 0:
        room = min(0x1000 - (linear & 0xFFF), state.mask + 1 - offset)
    elif (linear & 0xFFF) + size > 0x1000:
        return 1          # the first element straddles into the next page: it goes alone
    else:
        room = min(linear & 0xFFF, offset) + size
    return max(1, min(remaining, room // size))


def _transfer(cpu: "VmxCpu", ports: "PortSpace", direction: IoDirection, port: int, size: int,
              linear: int, count: int, descending: bool, user: bool) -> None:
    """Move `count` elements between the port and memory [linear, linear + count*size)."""
    vcpu = cpu.vcpu
    length = count * size
    if direction is IoDirection.IN:
        # Fault before reading the device: both pages of an element that straddles them.
        hpa = vcpu.translate(linear, MemoryAccess.WRITE, user)
        if (linear & 0xFFF) + length > 0x1000:
            vcpu.translate(linear + length - 1, MemoryAccess.WRITE, user)
        values = [ports.read(port, size) for _ in range(count)]
        if descending:
            values.reverse()
        data = b"".join(value.to_bytes(size, "little") for value in values)
        if (linear & 0xFFF) + length <= 0x1000:
            vcpu.write_host(hpa, data)
        else:
            vcpu.write_linear(linear, data, user)
        return
    data = vcpu.read_linear(linear, length, MemoryAccess.READ, user)
    elements = [int.from_bytes(data[i:i + size], "little") for i in range(0, length, size)]
    for value in reversed(elements) if descending else elements:
        ports.write(port, size, value)


HANDLERS = {ExitReason.IO_INSTRUCTION: handle_io}
