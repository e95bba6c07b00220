"""Time-slicing a partition's virtual processors on one (notional) physical processor.

vtemu runs one vCPU at a time. A partition with several vCPUs gives each, in vCPU order, a
turn of at most `slice_instructions` retired guest instructions (default DEFAULT_SLICE; the
`--slice N` option); the turn also ends when the vCPU halts, waits for SIPI, or yields (a
PAUSE-loop exit, a long-spin-wait notification). Guest time is the sum of every vCPU's
retired instructions, so slices and timers interleave identically on every run: a lock
holder preempted at the end of its slice is preempted at the same instruction each time.

Yielding is how the hypervisor answers PAUSE-loop exiting (SDM 25.1.3) and Hyper-V's
HvCallNotifyLongSpinWait (TLFS 3.x "spin wait" / 8.1 "spinlock enlightenment"): the
spinning vCPU gives up the rest of its turn, and the next vCPU (perhaps the lock holder)
runs. The counters show how much of that happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vtemu.vmx.cpu import VmxCpu

DEFAULT_SLICE = 20_000        # guest instructions (20 us of guest time at 1 GHz)
MAX_STOPS_PER_TURN = 256      # a vCPU that keeps stopping without retiring yields its turn


@dataclass
class SchedulerStats:
    turns: int = 0
    preemptions: int = 0              # turns that ended because the slice was used up
    yields: dict[str, int] = field(default_factory=dict)   # by reason: "pause-loop", "long-spin"


class VcpuScheduler:
    def __init__(self, vcpu_count: int, slice_instructions: int = DEFAULT_SLICE) -> None:
        if slice_instructions <= 0:
            raise ValueError("the slice must be at least one instruction")
        self.slice_instructions = slice_instructions
        self.time_sliced = vcpu_count > 1
        self.stats = SchedulerStats()
        self._yielded: set[int] = set()

    def begin_turn(self, cpu: "VmxCpu") -> None:
        self._yielded.discard(cpu.index)
        self.stats.turns += 1

    def yielded(self, cpu: "VmxCpu") -> bool:
        return cpu.index in self._yielded

    def yield_cpu(self, cpu: "VmxCpu", reason: str) -> None:
        """From an exit handler: end this vCPU's turn at the next instruction boundary."""
        self.stats.yields[reason] = self.stats.yields.get(reason, 0) + 1
        if self.time_sliced:
            self._yielded.add(cpu.index)
            cpu.vcpu.request_stop()

    def note_preempted(self) -> None:
        self.stats.preemptions += 1

    def report(self) -> str:
        yields = ", ".join(f"{n} {reason}" for reason, n in sorted(self.stats.yields.items())) or "none"
        return (f"scheduler: slice {self.slice_instructions} instructions, {self.stats.turns} turns, "
                f"{self.stats.preemptions} preemptions, yields: {yields}")
