"""CPUID (exit 10, unconditional): the partition's CPUID policy answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import unicorn.x86_const as U

from vtemu.hv.handlers.common import done
from vtemu.hv.outcome import Outcome
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit

_OUTPUTS = (U.UC_X86_REG_RAX, U.UC_X86_REG_RBX, U.UC_X86_REG_RCX, U.UC_X86_REG_RDX)


def handle_cpuid(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    leaf = cpu.vcpu.read(U.UC_X86_REG_EAX)
    subleaf = cpu.vcpu.read(U.UC_X86_REG_ECX)
    values = partition.cpuid.query(leaf, subleaf, apic_id=cpu.index)
    for register, value in zip(_OUTPUTS, values):
        cpu.vcpu.write(register, value)  # 32-bit results zero the upper halves (SDM CPUID)
    return done(exit, cpu)


HANDLERS = {ExitReason.CPUID: handle_cpuid}
