"""RDMSR (31) and WRMSR (32): the processor's MSR model, with #GP for anything else.

The TSC is read and written as the guest sees it, through the VMCS TSC offset (SDM 25.3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import unicorn.x86_const as U

from vtemu.hv.handlers.common import GP, done, inject_exception, write_eax_edx
from vtemu.hv.outcome import Outcome
from vtemu.machine.msrs import IA32_TIME_STAMP_COUNTER
from vtemu.machine.vcpu import GuestException
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit


def handle_rdmsr(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    msr = cpu.vcpu.read(U.UC_X86_REG_ECX)
    try:
        value = cpu.guest_tsc() if msr == IA32_TIME_STAMP_COUNTER else cpu.msrs.read(msr)
    except GuestException:
        return inject_exception(cpu, GP, 0)
    write_eax_edx(cpu, value)
    return done(exit, cpu)


def handle_wrmsr(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    msr = cpu.vcpu.read(U.UC_X86_REG_ECX)
    value = (cpu.vcpu.read(U.UC_X86_REG_EDX) << 32) | cpu.vcpu.read(U.UC_X86_REG_EAX)
    if msr == IA32_TIME_STAMP_COUNTER:
        value -= cpu.intercepts.tsc_offset  # the guest writes what it will read back
    try:
        cpu.msrs.write(msr, value)
    except GuestException:
        return inject_exception(cpu, GP, 0)
    return done(exit, cpu)


HANDLERS = {ExitReason.RDMSR: handle_rdmsr, ExitReason.WRMSR: handle_wrmsr}
