"""RDTSC (16), RDTSCP (51) and the VMX-preemption timer (52).

The guest's TSC is the virtual TSC (guest time) plus the VMCS TSC offset, exactly what the
processor would return without RDTSC exiting (SDM 25.3), so exiting changes nothing visible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import unicorn.x86_const as U

from vtemu.hv.handlers.common import done, write_eax_edx
from vtemu.hv.outcome import RESUME, Outcome
from vtemu.machine.msrs import IA32_TSC_AUX
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit


def handle_rdtsc(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    write_eax_edx(cpu, cpu.guest_tsc())
    if exit.reason is ExitReason.RDTSCP:
        cpu.vcpu.write(U.UC_X86_REG_RCX, cpu.msrs.read(IA32_TSC_AUX) & 0xFFFFFFFF)
    return done(exit, cpu)


def handle_preemption_timer(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    """The timer only gives the hypervisor control back; the guest simply continues."""
    return RESUME


HANDLERS = {ExitReason.RDTSC: handle_rdtsc, ExitReason.RDTSCP: handle_rdtsc,
            ExitReason.PREEMPTION_TIMER: handle_preemption_timer}
