"""INIT signal (3), start-up IPI (4) and PAUSE (40): bringing processors up, and yielding.

INIT and SIPI exit unconditionally in VMX non-root operation (SDM 25.2); the hypervisor
performs what the processor would have done (hv/smp.py). A PAUSE exit comes from PAUSE
exiting or PAUSE-loop exiting (SDM 25.1.3): the guest is spinning on something another vCPU
must release, so after completing the PAUSE the vCPU gives up the rest of its turn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtemu.hv import smp
from vtemu.hv.handlers.common import done
from vtemu.hv.outcome import RESUME, Outcome
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit

SIPI_VECTOR_MASK = 0xFF   # exit qualification bits 7:0 (SDM 27.2.1)


def handle_init(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    smp.init_processor(cpu, partition)
    return RESUME


def handle_sipi(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    smp.start_processor(cpu, exit.qualification & SIPI_VECTOR_MASK)
    return RESUME


def handle_pause(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    outcome = done(exit, cpu)
    partition.scheduler.yield_cpu(cpu, "pause-loop")
    return outcome


HANDLERS = {ExitReason.INIT_SIGNAL: handle_init, ExitReason.SIPI: handle_sipi,
            ExitReason.PAUSE: handle_pause}
