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

from vtemu.hv.handlers.common import GP, PF, done, inject_exception
from vtemu.hv.outcome import Outcome
from vtemu.machine.decode import Instruction
from vtemu.machine.translation import GuestPageFault, MemoryAccess, NonCanonicalAddress
from vtemu.vmx.port_io import string_operand, write_accumulator
from vtemu.vmx.qualifications import IoDirection, IoQualification
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import PortSpace, VmxCpu
    from vtemu.vmx.exit import VmExit

RFLAGS_DF = 1 << 10


def handle_io(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    io = exit.decoded(IoQualification)
    if io.string:
        assert exit.instruction is not None
        fault = emulate_string_io(cpu, partition.ports, exit.instruction, io.port, io.size,
                                  io.direction, io.rep)
        if fault is None:
            return done(exit, cpu)
        if fault.cr2 is not None:
            cpu.vcpu.write(U.UC_X86_REG_CR2, fault.cr2)
        return inject_exception(cpu, fault.vector, fault.error_code)
    if io.direction is IoDirection.IN:
        write_accumulator(cpu, io.size, partition.ports.read(io.port, io.size))
    else:
        value = cpu.vcpu.read(U.UC_X86_REG_RAX) & ((1 << (8 * io.size)) - 1)
        partition.ports.write(io.port, io.size, value)
    return done(exit, cpu)


@dataclass(frozen=True)
class StringIoFault:
    """The exception that stopped a string instruction, for the caller to deliver: injected
    by the exit handler, raised by the processor when the bitmap let the instruction run."""

    vector: int
    error_code: int
    cr2: int | None = None


def emulate_string_io(cpu: "VmxCpu", ports: "PortSpace", insn: Instruction, port: int, size: int,
                      direction: IoDirection, rep: bool) -> StringIoFault | None:
    """Perform the iterations; None when the instruction completed, else the fault that
    stopped it with the completed iterations retired (rSI/rDI and rCX updated)."""
    state = string_operand(cpu, insn, direction)
    vcpu = cpu.vcpu
    step = -size if vcpu.read(U.UC_X86_REG_RFLAGS) & RFLAGS_DF else size
    remaining = vcpu.read(state.count) & state.mask if rep else 1
    user = vcpu.context.load().cpl == 3
    while remaining:
        offset = vcpu.read(state.pointer) & state.mask
        first = state.base + offset          # the element the next iteration touches
        batch = _elements_in_run(first, offset, state.mask, step, remaining)
        lowest = first if step > 0 else first - (batch - 1) * size
        try:
            _transfer(cpu, ports, direction, port, size, lowest, batch, step < 0, user)
        except GuestPageFault as fault:
            # CR2 names the faulting iteration's element, whichever end of the run it is.
            same_page = fault.linear >> 12 == first >> 12
            return StringIoFault(PF, fault.error_code, first if same_page else fault.linear)
        except NonCanonicalAddress:
            return StringIoFault(GP, 0)       # SDM Vol. 2 INS/OUTS 64-bit mode exceptions
        vcpu.write(state.pointer, (offset + batch * step) & state.mask)
        remaining -= batch
        if rep:
            vcpu.write(state.count, remaining)
    return None


def _elements_in_run(linear: int, offset: int, mask: int, step: int, remaining: int) -> int:
    """How many elements from `linear` stay within its page and do not wrap the offset (at least one)."""
    size = abs(step)
    if step > 0:
        room = min(0x1000 - (linear & 0xFFF), mask + 1 - offset)
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
        data = ports.read_string(port, size, count)
        if descending:
            data = _reversed_elements(data, size)
        if (linear & 0xFFF) + length <= 0x1000:
            vcpu.write_host(hpa, data)
        else:
            vcpu.write_linear(linear, data, user)
        return
    data = vcpu.read_linear(linear, length, MemoryAccess.READ, user)
    ports.write_string(port, size, _reversed_elements(data, size) if descending else data)


def _reversed_elements(data: bytes, size: int) -> bytes:
    """The elements of `data` in the opposite order (DF = 1 walks memory downwards)."""
    return b"".join(data[i:i + size] for i in range(len(data) - size, -1, -size))


HANDLERS = {ExitReason.IO_INSTRUCTION: handle_io}
