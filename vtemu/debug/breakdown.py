"""Feed a partition's exit statistics with breakdown keys (`vtemu run --stats`).

The dispatcher always counts and times exits per reason (hv/stats.py). Breakdowns cost a
register read for some families (MSR, CPUID leaf, hypercall code), so they are collected only
when asked for: the key is read before the handler runs (it may overwrite its operands), and
the handler's time is added to that key's timing after it. Each (vCPU, reason, key) timing
is looked up once per exit in a flat dictionary, and keys that depend on the qualification
alone (I/O ports) are memoized, so an exit costs about a microsecond more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtemu.debug.exitinfo import FAMILIES, BreakdownKey, io_key
from vtemu.hv.stats import Timing
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.outcome import Outcome
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit

_IO = ExitReason.IO_INSTRUCTION


class BreakdownCollector:
    def __init__(self, partition: "Partition") -> None:
        self.stats = partition.stats
        self._keys = {reason: family.key for reason, family in FAMILIES.items()}
        self._io_keys: dict[int, BreakdownKey] = {}        # qualification -> key
        self._timings: dict[tuple[int, ExitReason, BreakdownKey], Timing] = {}
        # Between inspector and observer: a stack, so nested dispatches would still pair.
        self._open: list[Timing | None] = []
        partition.exit_inspectors.append(self._before)
        partition.exit_observers.append(self._after)

    def _before(self, cpu: "VmxCpu", exit: "VmExit") -> None:
        reason = exit.reason
        if reason is _IO:
            key: BreakdownKey | None = self._io_keys.get(exit.qualification)
            if key is None:
                key = self._io_keys[exit.qualification] = io_key(exit, cpu)
        else:
            function = self._keys.get(reason)
            key = function(exit, cpu) if function is not None else None
        if key is None:
            self._open.append(None)
            return
        slot = (cpu.index, reason, key)
        timing = self._timings.get(slot)
        if timing is None:
            timing = self._timings[slot] = self.stats.breakdown_timing(cpu.index, reason, key)
        self._open.append(timing)

    def _after(self, exit: "VmExit", outcome: "Outcome", elapsed_ns: int) -> None:
        timing = self._open.pop()
        if timing is not None:
            timing.add(elapsed_ns)


def collect_breakdowns(partitions: list["Partition"]) -> list[BreakdownCollector]:
    return [BreakdownCollector(partition) for partition in partitions]
