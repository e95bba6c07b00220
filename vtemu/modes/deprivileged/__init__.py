"""`--mode deprivileged`: classic trap-and-emulate by ring compression, without VT-x's
instruction exiting (engine.py); the VT-x machine serves only as the trap mechanism."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtemu.errors import BadInput
from vtemu.modes import vtx
from vtemu.modes.deprivileged.engine import DeprivilegedEngine
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu


def configure(cpu: "VmxCpu", partition: "Partition") -> None:
    """The firmware runs as under vtx; the engine takes the kernel over at its entry."""
    if partition.spec.paging != "ept":
        raise BadInput("--mode deprivileged runs with --paging ept (memory stays nested)")
    vtx.configure(cpu, partition)
    engines: dict[int, DeprivilegedEngine] = getattr(partition, "deprivileged_engines", {})
    engines[cpu.index] = DeprivilegedEngine(cpu, partition)
    if not hasattr(partition, "deprivileged_engines"):
        partition.deprivileged_engines = engines  # type: ignore[attr-defined]
        partition.handlers[ExitReason.EXCEPTION_OR_NMI] = (
            lambda exit, cpu, partition: engines[cpu.index].on_exception(exit))
        partition.handlers[ExitReason.EXTERNAL_INTERRUPT] = (
            lambda exit, cpu, partition: engines[cpu.index].on_external_interrupt(exit))
        partition.handlers[ExitReason.INTERRUPT_WINDOW] = (
            lambda exit, cpu, partition: engines[cpu.index].on_interrupt_window(exit))
