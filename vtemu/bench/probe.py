"""What the harness attaches to a benchmark partition: the bench port and counter snapshots.

The guest writes START and END to the command port around its measured loop
(guests/include/bench.inc) and then the number of iterations it did to the count port. The
probe timestamps the marks with the host clock and snapshots every counter the hypervisor
keeps, so a sample covers the loop and nothing else: not the boot, not the report.

Exactness of the window: the START write is itself a VM exit (or a BT callout), recorded by
the dispatcher after its handler returns; the START snapshot is therefore taken by an exit
observer, after that recording, and the END snapshot inside the END write's handler, before
its own recording. The counter deltas are exactly the loop's. The host timestamps sit inside
the two mark handlers, so the window holds about one mark exit's cost (microseconds).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vtemu.machine import layout

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition

CMD_START = 1
CMD_END = 2
COMMAND_OFFSET = 0
COUNT_OFFSET = 4

Counters = dict[str, float]


def snapshot(partition: "Partition") -> Counters:
    """Every counter the partition keeps, flat: `exit:REASON`, `callout:REASON`,
    `paging:NAME`, `bt:NAME`, `bt_callout:KIND`, `hypercall:CODE`, plus totals."""
    counters: Counters = {"instructions": float(sum(cpu.vcpu.retired_so_far for cpu in partition.vcpus)),
                          "tlb_fills": float(sum(cpu.vcpu.tlb_fills for cpu in partition.vcpus))}
    _add(counters, "exit", partition.stats.counts())
    _add(counters, "callout", partition.callout_stats.counts())
    counters["exits"] = float(partition.stats.total)
    counters["callouts"] = float(partition.callout_stats.total)
    _add(counters, "paging", partition.paging.counter_values())
    for cpu in partition.vcpus:
        engine = getattr(cpu, "mode_engine", None)
        values = getattr(engine, "counter_values", None)
        if values is not None:
            _add(counters, "bt", values())
    service = getattr(partition, "hypercalls", None)
    calls = getattr(service, "calls", None)
    if calls is not None:
        _add(counters, "hypercall", {f"{code:#06x}": count for code, count in calls.items()})
        counters["hypercalls"] = float(sum(calls.values()))
    return counters


def _add(counters: Counters, prefix: str, values: Mapping[str, object]) -> None:
    """Numbers under `prefix:name`; a nested mapping (BT callouts by kind) under `prefix_name:key`."""
    for name, value in values.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            key = f"{prefix}:{name}"
            counters[key] = counters.get(key, 0.0) + float(value)
        elif isinstance(value, Mapping):
            _add(counters, f"{prefix}_{name}", value)


def delta(start: Counters, end: Counters) -> Counters:
    return {name: end.get(name, 0.0) - start.get(name, 0.0) for name in sorted(set(start) | set(end))}


@dataclass
class BenchProbe:
    """The bench port device (two 32-bit registers at layout.BENCH_PORT_BASE)."""

    partition: "Partition"
    start_ns: int | None = None
    end_ns: int | None = None
    reported: int | None = None
    start: Counters | None = None
    end: Counters | None = None
    problems: list[str] = field(default_factory=list)
    _start_pending: bool = False

    def attach(self) -> "BenchProbe":
        self.partition.ports.attach("bench", layout.BENCH_PORT_BASE, layout.BENCH_PORT_SIZE, self,
                                    byte_wide=False)
        self.partition.exit_observers.append(self._after_exit)
        return self

    def io_read(self, offset: int, size: int) -> int:
        return 0

    def io_write(self, offset: int, size: int, value: int) -> None:
        if offset == COUNT_OFFSET:
            self.reported = value & 0xFFFFFFFF
        elif offset == COMMAND_OFFSET and value == CMD_START:
            if self.start_ns is not None:
                self.problems.append("the guest marked its start twice")
            self._start_pending = True
            self.start = snapshot(self.partition)       # replaced after the mark's exit is recorded
            self.start_ns = time.perf_counter_ns()
        elif offset == COMMAND_OFFSET and value == CMD_END:
            self.end_ns = time.perf_counter_ns()
            self.end = snapshot(self.partition)

    def _after_exit(self, exit: object, outcome: object, elapsed_ns: int) -> None:
        if self._start_pending:
            self._start_pending = False
            self.start = snapshot(self.partition)

    @property
    def window_ns(self) -> int | None:
        if self.start_ns is None or self.end_ns is None:
            return None
        return self.end_ns - self.start_ns

    def loop_counters(self) -> Counters | None:
        if self.start is None or self.end is None:
            return None
        return delta(self.start, self.end)
