"""HLT (exit 12): complete the HLT, then keep the vCPU out of the guest until an interrupt."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtemu.hv.outcome import HALT, RESUME, Outcome
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit


def handle_hlt(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    cpu.advance_rip(exit)
    if partition.interrupt_ready(cpu):
        return RESUME
    return HALT


HANDLERS = {ExitReason.HLT: handle_hlt}
