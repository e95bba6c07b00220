"""Spinlock waste and its two cures: guests/spinlock at 2 and 4 vCPUs with no mitigation,
with PAUSE-loop exiting (`--ple`) and enlightened (`--mode pv`, the PV=1 build whose
spinners call HvCallNotifyLongSpinWait after CPUID 40000004h EBX failed attempts), in one run.

For each configuration: the spin iterations every processor wasted waiting for the lock
(counted by the guest itself, so the same number on every run), the guest instructions all
vCPUs retired, the scheduler's turns and yields, and the host wall time of the run loop
(median of `repeats`; the only number here that varies between runs).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from vtemu.asm import build_guest
from vtemu.hv.boot import build_partitions
from vtemu.hv.partition import PartitionSpec
from vtemu.hv.runloop import RunLimits, Runner
from vtemu.hv.scheduler import DEFAULT_SLICE
from vtemu.images import firmware_image
from vtemu.modes import SOURCE_DEFINES

GUEST = Path(__file__).resolve().parents[2] / "guests" / "spinlock.S"
CURES = {"none": ("vtx", False), "ple": ("vtx", True), "enlightened": ("pv", False)}
VCPU_COUNTS = (2, 4)
DEFAULT_ITERATIONS = 200      # the guest's own default (lock acquisitions per processor)
TIMEOUT_S = 600.0
_SPINS = re.compile(rb"spin iterations (\d+)")


@dataclass
class SpinRun:
    vcpus: int
    cure: str
    slice_instructions: int
    iterations: int = DEFAULT_ITERATIONS
    exit_code: int = 0
    output: bytes = b""
    spin_iterations: int = 0
    instructions: int = 0
    turns: int = 0
    yields: dict[str, int] = field(default_factory=dict)
    wall_seconds: list[float] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return statistics.median(self.wall_seconds)

    def as_dict(self) -> dict[str, object]:
        return {"vcpus": self.vcpus, "cure": self.cure, "slice": self.slice_instructions,
                "iterations": self.iterations,
                "exit_code": self.exit_code, "spin_iterations": self.spin_iterations,
                "instructions": self.instructions, "turns": self.turns, "yields": self.yields,
                "wall_s": self.wall_s}


def _image(cure: str, iterations: int) -> bytes:
    mode, _ = CURES[cure]
    return build_guest(GUEST, {**SOURCE_DEFINES.get(mode, {}), "ITERATIONS": str(iterations)})


def _run_once(run: SpinRun, image: bytes, firmware: bytes) -> None:
    mode, ple = CURES[run.cure]
    output = bytearray()
    spec = PartitionSpec(name="spinlock", kernel=image, vcpus=run.vcpus, mode=mode, ple=ple,
                         slice_instructions=run.slice_instructions)
    partitions = build_partitions([spec], firmware, lambda index, spec: output.extend)
    runner = Runner(partitions, RunLimits(timeout_s=TIMEOUT_S))
    runner.run()
    partition = partitions[0]
    match = _SPINS.search(bytes(output))
    run.output = bytes(output)
    run.exit_code = partition.result.exit_code if partition.result else -1
    run.spin_iterations = int(match.group(1)) if match else -1
    run.instructions = sum(cpu.vcpu.instructions_retired for cpu in partition.vcpus)
    run.turns = partition.scheduler.stats.turns
    run.yields = dict(partition.scheduler.stats.yields)
    run.wall_seconds.append(runner.wall_s)


def measure(repeats: int = 3, slice_instructions: int = DEFAULT_SLICE,
            iterations: int = DEFAULT_ITERATIONS) -> list[SpinRun]:
    """Every configuration `repeats` times, interleaved so that host noise spreads evenly."""
    firmware = firmware_image()
    images = {cure: _image(cure, iterations) for cure in CURES}
    runs = [SpinRun(vcpus, cure, slice_instructions, iterations)
            for vcpus in VCPU_COUNTS for cure in CURES]
    for _ in range(repeats):
        for run in runs:
            _run_once(run, images[run.cure], firmware)
    return runs


def format_table(runs: list[SpinRun]) -> str:
    header = (f"{'vCPUs':>5}  {'cure':<11}  {'spin iterations':>15}  {'guest instr':>11}  "
              f"{'turns':>5}  {'yields':<16}  {'wall s':>7}")
    title = (f"guests/spinlock, {runs[0].iterations} acquisitions per vCPU, "
             f"slice {runs[0].slice_instructions} instructions") if runs else ""
    lines = [title, header]
    for run in runs:
        yields = ", ".join(f"{n} {reason}" for reason, n in sorted(run.yields.items())) or "-"
        lines.append(f"{run.vcpus:>5}  {run.cure:<11}  {run.spin_iterations:>15}  "
                     f"{run.instructions:>11}  {run.turns:>5}  {yields:<16}  {run.wall_s:>7.3f}")
    return "\n".join(lines)
