"""Binary translation against VT-x on the same guest loops, per iteration, in one run.

Two loops, each assembled at two iteration counts so that boot and translation warm-up
cancel: the per-iteration cost is (t(long) - t(short)) / (long - short), host time of the
whole run, medians over repeats with the configurations alternating (vtx, bt, vtx, bt...):

* `sensitiveloop` (guests/sensitiveloop.S): STI, PUSHFQ, CLI, MOV CR8, MOV from CR8, POPFQ
  per iteration -- two VM exits under vtx (CR8-load/store exiting, no TPR shadow), none and
  no callout under bt (the translator's inline virtual TPR). The project's goal: bt >= 10x.
* `compute` (the exit-free loop of exit_cost.py): ALU work only, where bt pays its
  translation once and then runs chained translated code. The goal: bt >= 0.8x vtx.

Each run also reports the translation counters (blocks, superblocks, TC bytes...) of bt.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from vtemu.asm import build_guest
from vtemu.bench.exit_cost import COMPUTE_BODY, loop_image
from vtemu.hv.boot import build_partitions
from vtemu.hv.partition import PartitionSpec
from vtemu.hv.runloop import RunLimits, Runner
from vtemu.images import firmware_image

GUESTS_DIR = Path(__file__).resolve().parents[2] / "guests"
MODES = ("vtx", "bt")
COUNTS = {"sensitiveloop": (2_000, 40_000), "compute": (2_000_000, 50_000_000)}
QUICK_COUNTS = {"sensitiveloop": (500, 5_000), "compute": (1_000_000, 10_000_000)}


@dataclass
class LoopResult:
    loop: str
    iterations: tuple[int, int]
    ns_per_iteration: dict[str, float] = field(default_factory=dict)    # mode -> median
    exits_per_iteration: dict[str, float] = field(default_factory=dict)
    translation: dict[str, object] = field(default_factory=dict)        # bt, long run

    @property
    def speedup(self) -> float:
        """How many times faster bt runs one iteration than vtx."""
        return self.ns_per_iteration["vtx"] / self.ns_per_iteration["bt"]

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "bt_speedup_over_vtx": round(self.speedup, 2)}


def image(loop: str, iterations: int) -> bytes:
    if loop == "sensitiveloop":
        return build_guest(GUESTS_DIR / "sensitiveloop.S", defines={"ITERATIONS": str(iterations)})
    return loop_image(COMPUTE_BODY, iterations)


def run_once(kernel: bytes, mode: str) -> tuple[float, int, dict[str, object]]:
    """(host seconds, VM exits, bt translation counters) of one whole run."""
    spec = PartitionSpec(name="bt-speedup", kernel=kernel, mode=mode)
    partition = build_partitions([spec], firmware_image(), lambda index, spec: lambda data: None)[0]
    start = time.perf_counter()
    Runner([partition], RunLimits(timeout_s=300)).run()
    seconds = time.perf_counter() - start
    if partition.result is None or partition.result.exit_code != 0:
        raise RuntimeError(f"{mode}: the loop guest failed ({partition.result})")
    engine = partition.vcpus[0].mode_engine
    counters = engine.counter_values() if hasattr(engine, "counter_values") else {}
    return seconds, partition.stats.total, counters


def measure(quick: bool = False, repeats: int = 3) -> list[LoopResult]:
    results = []
    for loop, (short, long) in (QUICK_COUNTS if quick else COUNTS).items():
        images = {count: image(loop, count) for count in (short, long)}
        samples: dict[str, list[float]] = {mode: [] for mode in MODES}
        exits: dict[str, float] = {}
        result = LoopResult(loop, (short, long))
        for _ in range(repeats):
            for mode in MODES:                      # alternate so drift cancels
                t_short, e_short, _ = run_once(images[short], mode)
                t_long, e_long, counters = run_once(images[long], mode)
                samples[mode].append((t_long - t_short) * 1e9 / (long - short))
                exits[mode] = (e_long - e_short) / (long - short)
                if mode == "bt":
                    result.translation = counters
        result.ns_per_iteration = {mode: round(statistics.median(s), 1) for mode, s in samples.items()}
        result.exits_per_iteration = exits
        results.append(result)
    return results


def print_results(results: list[LoopResult], stream: TextIO) -> None:
    print("loop            vtx ns/iter   bt ns/iter   exits/iter vtx   bt   bt speed-up", file=stream)
    for r in results:
        print(f"{r.loop:14s} {r.ns_per_iteration['vtx']:12.1f} {r.ns_per_iteration['bt']:12.1f}"
              f" {r.exits_per_iteration['vtx']:16.2f} {r.exits_per_iteration['bt']:4.2f}"
              f" {r.speedup:10.2f}x", file=stream)
    for r in results:
        t = r.translation
        print(f"{r.loop} under bt: {t.get('instructions_translated')} instructions translated in "
              f"{t.get('blocks')} blocks and {t.get('superblocks')} superblocks (mean "
              f"{t.get('mean_superblock_length')} instructions), {t.get('tc_bytes')} TC bytes, "
              f"{t.get('chained')} chained branches", file=stream)
