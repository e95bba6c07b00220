"""The run loop: every vCPU of every partition, in deterministic round-robin, on guest time.

Each round gives each runnable vCPU one slice. While a partition's clock is live a slice is
counted and ends exactly at the next timer deadline (so timers fire at the same instruction
every run); otherwise the vCPU runs at full speed until something leaves the guest. When no
vCPU of a partition can run, guest time jumps to the next deadline; with no deadline left and
nothing to wake a vCPU, the partition has halted for good. Host time is never consulted
except by the optional wall-clock timeout and Ctrl-C, which end the run.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from dataclasses import dataclass

from vtemu.errors import VtemuError
from vtemu.hv.outcome import RunEnd, Shutdown
from vtemu.hv.partition import Partition
from vtemu.hv.scheduler import MAX_STOPS_PER_TURN
from vtemu.vmx.cpu import VmxCpu

COUNT_FOREVER = 1 << 40  # a counted slice with no deadline in sight


@dataclass(frozen=True)
class RunLimits:
    max_instructions: int | None = None
    timeout_s: float | None = None


class Runner:
    def __init__(self, partitions: list[Partition], limits: RunLimits = RunLimits()) -> None:
        self.partitions = partitions
        self.limits = limits
        self.wall_s = 0.0
        self._abort: Shutdown | None = None
        self._running: Partition | None = None

    def run(self) -> None:
        start = time.perf_counter()
        with _Watchdog(self):
            while not self._abort:
                active = [p for p in self.partitions if not p.ended]
                if not active:
                    break
                for partition in active:
                    self._guarded_round(partition)
        if self._abort is not None:
            for partition in self.partitions:
                partition.end(self._abort)
        self.wall_s = time.perf_counter() - start

    @property
    def aborted(self) -> bool:
        return self._abort is not None

    def abort(self, outcome: Shutdown) -> None:
        """From the watchdog thread: end the run at the next boundary (host-side, not guest-visible)."""
        self._abort = outcome
        partition = self._running
        if partition is not None:
            for cpu in partition.vcpus:
                cpu.vcpu.request_stop()

    def _guarded_round(self, partition: Partition) -> None:
        """A fault in the VMM itself ends that partition with a defined outcome and a state
        dump (exit code INTERNAL_ERROR), never a traceback; the other partitions go on."""
        try:
            self._round(partition)
        except VtemuError:
            raise                               # the user's input was wrong: a one-line error
        except Exception as error:          # noqa: BLE001 - any VMM bug is reported, not raised
            self._running = None
            partition.end(Shutdown(RunEnd.INTERNAL_ERROR,
                                   f"internal error: {type(error).__name__}: {error}", dump=True))

    def _round(self, partition: Partition) -> None:
        ran = False
        self._running = partition
        for cpu in partition.vcpus:
            if partition.ended or self._abort:
                break
            if partition.scheduler.time_sliced:
                ran |= self._turn(partition, cpu)
                continue
            ran |= cpu.run_slice(self._budget(partition, cpu.vcpu.instructions_retired))
            partition.clock.run_due_timers()
            self._check_instruction_limit(partition)
        self._running = None
        if not ran and not partition.ended and not self._abort:
            self._idle(partition)

    def _turn(self, partition: Partition, cpu: VmxCpu) -> bool:
        """One vCPU's time slice (hv/scheduler.py): counted, so it ends at the same
        instruction every run; over early when the vCPU halts, yields or keeps stopping."""
        scheduler = partition.scheduler
        scheduler.begin_turn(cpu)
        start = cpu.vcpu.instructions_retired
        ran = False
        for _ in range(MAX_STOPS_PER_TURN):
            left = scheduler.slice_instructions - (cpu.vcpu.instructions_retired - start)
            if left <= 0:
                scheduler.note_preempted()
                break
            if partition.ended or self._abort or scheduler.yielded(cpu):
                break
            if not cpu.run_slice(min(left, self._counted_budget(partition, cpu))):
                break
            ran = True
            partition.clock.run_due_timers()
            self._check_instruction_limit(partition)
        return ran

    def _counted_budget(self, partition: Partition, cpu: VmxCpu) -> int:
        budget = partition.clock.instructions_until_deadline()
        budget = COUNT_FOREVER if budget is None else budget
        limit = self.limits.max_instructions
        if limit is not None:
            budget = min(budget, limit - sum(c.vcpu.instructions_retired for c in partition.vcpus))
        return max(1, budget)

    def _budget(self, partition: Partition, retired: int) -> int | None:
        limit = self.limits.max_instructions
        if not partition.clock.live and limit is None:
            return None  # nothing observes time: run at full speed, uncounted
        budget = partition.clock.instructions_until_deadline()
        budget = COUNT_FOREVER if budget is None else budget
        if limit is not None:
            budget = min(budget, limit - retired)
        return max(1, budget)

    def _check_instruction_limit(self, partition: Partition) -> None:
        limit = self.limits.max_instructions
        if limit is None:
            return
        if sum(cpu.vcpu.instructions_retired for cpu in partition.vcpus) >= limit:
            partition.end(Shutdown(RunEnd.INSTRUCTION_LIMIT,
                                   f"instruction limit of {limit} reached", dump=True))

    def _idle(self, partition: Partition) -> None:
        """Every vCPU is halted or blocked: skip guest time to whatever can wake one."""
        if any(cpu.can_wake() for cpu in partition.vcpus):
            return
        deadline = partition.clock.next_deadline_ns()
        if deadline is None and partition.uart.wait_for_input():
            return  # host input arrived for a guest waiting on it by interrupt
        if deadline is None:
            partition.end(Shutdown(RunEnd.HALTED_FOREVER,
                                   "every vCPU is halted and no interrupt can wake one", dump=True))
            return
        partition.clock.skip_to(deadline)
        partition.clock.run_due_timers()


class _Watchdog:
    """Ctrl-C and the wall-clock timeout, delivered even while the guest never leaves Unicorn.

    The main thread sits in Unicorn's C code (which releases the GIL) until an exit, so a
    Python signal handler alone would wait for the guest. A wakeup fd lets this thread see
    the signal at once and stop the vCPU; the signal's KeyboardInterrupt is swallowed."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._read, self._write = os.pipe()
        self._done = threading.Event()
        self._previous_fd = -1
        self._previous_handler: object = None
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "_Watchdog":
        if threading.current_thread() is threading.main_thread():
            os.set_blocking(self._write, False)
            self._previous_fd = signal.set_wakeup_fd(self._write)
            self._previous_handler = signal.signal(signal.SIGINT, lambda *_: None)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        os.write(self._write, b"\0")
        self._thread.join()
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)  # type: ignore[arg-type]
            signal.set_wakeup_fd(self._previous_fd)
        os.close(self._read)
        os.close(self._write)

    def _watch(self) -> None:
        deadline = None
        if self.runner.limits.timeout_s:
            deadline = time.monotonic() + self.runner.limits.timeout_s
        while not self._done.is_set():
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._read], [], [], wait)
            if self._done.is_set():
                return
            if ready:
                if os.read(self._read, 64).strip(b"\0"):
                    self.runner.abort(Shutdown(RunEnd.INTERRUPTED, "interrupted (Ctrl-C)"))
                    return
            elif deadline is not None and time.monotonic() >= deadline:
                self.runner.abort(Shutdown(RunEnd.TIMEOUT,
                                           f"wall-clock timeout of {self.runner.limits.timeout_s} s",
                                           dump=True))
                return
