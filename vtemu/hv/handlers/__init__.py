"""Exit handlers, one module per family, collected into the table the dispatcher uses.

A handler takes (exit, cpu, partition), does the hypervisor's work through the VMCS and the
guest's registers, and returns an Outcome; it never drives the run loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from vtemu.hv.handlers import (cache, control_registers, cpuid, debug_registers, descriptor_tables,
                               ept, events, hlt, io, msr, smp, timing, vmx_instructions)
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.outcome import Outcome
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit

Handler = Callable[["VmExit", "VmxCpu", "Partition"], "Outcome"]

HANDLERS: dict[ExitReason, Handler] = {
    **events.HANDLERS,
    **cpuid.HANDLERS,
    **hlt.HANDLERS,
    **cache.HANDLERS,
    **timing.HANDLERS,
    **vmx_instructions.HANDLERS,
    **control_registers.HANDLERS,
    **debug_registers.HANDLERS,
    **io.HANDLERS,
    **msr.HANDLERS,
    **descriptor_tables.HANDLERS,
    **ept.HANDLERS,
    **smp.HANDLERS,
}
