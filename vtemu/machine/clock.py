"""Guest time from guest progress, never from the host clock.

One retired guest instruction is one nanosecond of guest time (a 1 GHz, 1-IPC machine);
a halted vCPU skips guest time forward to the next timer deadline. The same image and
options therefore see the same times, and produce the same exit sequence, on every run.

Counting instructions exactly costs Unicorn ~20x on exit-free code, so the vCPU counts only
while time matters: from the moment anything observes guest time (a timer is armed, the TSC,
PIT, RTC is read) the clock is *live* and stays live. Before that moment guest time stands
still at zero, so guests that never look at a clock run at full speed.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Callable

NS_PER_INSN = 1
NS_PER_SECOND = 1_000_000_000


@dataclass(order=True)
class Timer:
    deadline_ns: int
    sequence: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class GuestClock:
    """Shared by a partition's devices and vCPUs."""

    def __init__(self) -> None:
        self._synced_ns = 0
        self._idle_ns = 0
        self._live = False
        self._progress: list[Callable[[], int]] = []
        self._timers: list[Timer] = []
        self._sequence = itertools.count()
        self.on_live: list[Callable[[], None]] = []

    # --- reading time --------------------------------------------------------------------
    @property
    def live(self) -> bool:
        """True once anything has observed guest time: from then on every instruction counts."""
        return self._live

    def now_ns(self) -> int:
        """Current guest time; observing it makes the clock live."""
        self._go_live()
        return self._synced_ns + self._running_insns() * NS_PER_INSN

    def _running_insns(self) -> int:
        """Instructions of the slice under way (at most one of a partition's vCPUs runs)."""
        return sum(progress() for progress in self._progress)

    def _go_live(self) -> None:
        if not self._live:
            self._live = True
            for callback in self.on_live:
                callback()

    def peek_ns(self) -> int:
        """Current guest time for diagnostics: does not make the clock live."""
        return self._synced_ns + self._running_insns() * NS_PER_INSN

    @property
    def idle_ns(self) -> int:
        """Guest time skipped while every vCPU was halted."""
        return self._idle_ns

    # --- advancing time ------------------------------------------------------------------
    def attach_progress(self, running_insns: Callable[[], int]) -> None:
        """Tell the clock how to read instructions retired by a vCPU's slice while it runs
        (each vCPU of the partition registers; the one not running reports 0)."""
        self._progress.append(running_insns)

    def retire(self, instructions: int) -> None:
        """A vCPU slice ended having retired this many instructions."""
        self._synced_ns += instructions * NS_PER_INSN

    def skip_to(self, deadline_ns: int) -> None:
        """Halted vCPUs wait for the next deadline: jump there without executing anything."""
        if deadline_ns > self._synced_ns:
            self._idle_ns += deadline_ns - self._synced_ns
            self._synced_ns = deadline_ns

    # --- timers --------------------------------------------------------------------------
    def schedule(self, deadline_ns: int, callback: Callable[[], None]) -> Timer:
        self._go_live()
        timer = Timer(deadline_ns, next(self._sequence), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def cancel(self, timer: Timer | None) -> None:
        if timer is not None:
            timer.cancelled = True

    def next_deadline_ns(self) -> int | None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0].deadline_ns if self._timers else None

    def instructions_until_deadline(self) -> int | None:
        """How many instructions the running vCPU may retire before the next timer is due."""
        deadline = self.next_deadline_ns()
        if deadline is None:
            return None
        return max(0, -(-(deadline - self._synced_ns) // NS_PER_INSN))

    def run_due_timers(self) -> int:
        """Fire every timer whose deadline has passed, in deadline order; returns how many fired."""
        fired = 0
        now = self._synced_ns
        while True:
            deadline = self.next_deadline_ns()
            if deadline is None or deadline > now:
                return fired
            timer = heapq.heappop(self._timers)
            timer.callback()
            fired += 1
