"""Nested paging against shadow paging on the memory guests, measured in one run.

Each guest boots under `--paging ept` and `--paging shadow`, alternately, `repeats` times;
the report gives the median wall time and, from one run of each (they are deterministic),
the VM exits by reason and the paging counters: TLB fills, page-walk references, shadow
hidden and true faults, page-table write traps, CR3 loads and root-cache hits.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vtemu.hv.boot import build_partitions
from vtemu.hv.partition import PartitionSpec
from vtemu.hv.runloop import RunLimits, Runner
from vtemu.images import firmware_image, kernel_image

GUESTS = ("ptemod", "cr3switch", "pgfault")
SCHEMES = ("ept", "shadow")
GUEST_DIR = Path(__file__).resolve().parents[2] / "guests"


@dataclass
class PagingRun:
    guest: str
    scheme: str
    seconds: list[float] = field(default_factory=list)
    exit_code: int = 0
    exits: Counter = field(default_factory=Counter)
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    def as_dict(self) -> dict[str, object]:
        return {"guest": self.guest, "paging": self.scheme, "median_s": round(self.median_s, 4),
                "samples_s": [round(s, 4) for s in self.seconds], "exit_code": self.exit_code,
                "exits": sum(self.exits.values()), "exits_by_reason": dict(self.exits),
                "counters": self.counters}


def _boot(image: bytes, firmware: bytes, name: str, scheme: str, run: PagingRun, record: bool) -> None:
    spec = PartitionSpec(name=name, kernel=image, paging=scheme)
    partition = build_partitions([spec], firmware, lambda index, spec: lambda data: None)[0]
    exits: Counter = Counter()
    if record:
        partition.exit_observers.append(lambda exit, outcome, ns: exits.update([exit.reason.name]))
    start = time.perf_counter()
    Runner([partition], RunLimits(timeout_s=600)).run()
    run.seconds.append(time.perf_counter() - start)
    assert partition.result is not None
    run.exit_code = partition.result.exit_code
    if record:
        run.exits = exits
        run.counters = {"tlb_fills": sum(cpu.vcpu.tlb_fills for cpu in partition.vcpus),
                        **partition.paging.counter_values()}


def measure(guests: tuple[str, ...] = GUESTS, repeats: int = 3) -> list[PagingRun]:
    firmware = firmware_image()
    images = {name: kernel_image(GUEST_DIR / f"{name}.S") for name in guests}
    runs = {(name, scheme): PagingRun(name, scheme) for name in guests for scheme in SCHEMES}
    for repeat in range(repeats):
        for name in guests:
            for scheme in SCHEMES:          # alternate so host drift hits both schemes alike
                _boot(images[name], firmware, name, scheme, runs[name, scheme], record=repeat == 0)
    return list(runs.values())
