"""Small helpers every handler family uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

import unicorn.x86_const as U

from vtemu.hv.outcome import RESUME, Outcome
from vtemu.machine.decode import CodeMode
from vtemu.vmx.interruption import InterruptionInfo, exception_delivers_error_code
from vtemu.vmx.qualifications import Gpr

if TYPE_CHECKING:
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit

UD, GP, PF = 6, 13, 14
_GPR_REGISTERS = [getattr(U, f"UC_X86_REG_{name}") for name in
                  ("RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI",
                   "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15")]


def done(exit: "VmExit", cpu: "VmxCpu") -> Outcome:
    """The instruction has been emulated: complete it and re-enter the guest."""
    cpu.advance_rip(exit)
    return RESUME


def inject_exception(cpu: "VmxCpu", vector: int, error_code: int | None = None) -> Outcome:
    """Reflect a fault into the guest at the exiting instruction (RIP not advanced)."""
    protected = bool(cpu.vcpu.read(U.UC_X86_REG_CR0) & 1)
    delivers = exception_delivers_error_code(vector, protected_mode=protected)
    if delivers and error_code is None:
        error_code = 0
    cpu.inject(InterruptionInfo.exception(vector, error_code=delivers),
               error_code if delivers else None)
    return RESUME


def read_gpr(cpu: "VmxCpu", gpr: Gpr) -> int:
    """A MOV CR/DR source operand: 64 bits in 64-bit mode, 32 bits elsewhere (SDM Vol. 2 MOV CR)."""
    value = cpu.vcpu.read(_GPR_REGISTERS[gpr])
    return value if cpu.vcpu.code_mode() is CodeMode.BITS64 else value & 0xFFFFFFFF


def write_gpr(cpu: "VmxCpu", gpr: Gpr, value: int) -> None:
    cpu.vcpu.write(_GPR_REGISTERS[gpr], value)


def write_eax_edx(cpu: "VmxCpu", value: int) -> None:
    """EDX:EAX results (RDMSR, RDTSC) zero the upper halves of RAX and RDX in 64-bit mode."""
    cpu.vcpu.write(U.UC_X86_REG_RAX, value & 0xFFFFFFFF)
    cpu.vcpu.write(U.UC_X86_REG_RDX, (value >> 32) & 0xFFFFFFFF)
