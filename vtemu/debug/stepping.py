"""A guest under a debugger: exact steps, stop conditions, and reverse execution.

A debugged machine always counts instructions, from reset, so every stop has an exact
*position*: the instructions retired plus the hardware exceptions delivered to the guest
(a faulting instruction never retires, yet stepping over it is a step: it lands in the
handler). Every stop is *settled*: whatever the processor owes before the next instruction
(VM entry, event injection, delivery of a fault or of an unmasked interrupt) is done first
(VmxCpu.settle), so the state shown is the one the next instruction starts from, and the
same position always shows the same state.

Slices are bounded the way the run loop bounds them (never past a timer deadline), and
additionally by the step or instruction-count target; a code check on every instruction
(VCpu.set_debug_check) stops before an address breakpoint, on a CPU mode change, or when
interrupted (Ctrl-C, gdb's \\x03); an exit recorder (vtemu.debug.trace) stops after the
VM exits a filter names.

Reverse execution re-executes: these guests run from reset to any point in well under a
second even counted, so `rs`/`rc` build a fresh machine from the same image and run it,
deterministically, to the earlier position, re-applying what the user changed on the way
(a journal of interrupt-holding and register/memory writes, each at the position it was
made). No snapshot can then miss hidden state: it is all recomputed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Callable, Iterable

import unicorn
import unicorn.x86_const as U

from vtemu.debug.filters import ExitFilter
from vtemu.debug.trace import TraceRecord, TraceRecorder, record_of
from vtemu.hv.runloop import COUNT_FOREVER, Runner
from vtemu.machine.cpustate import HF_CS32, HF_CS64, HF_LMA, HF_PE
from vtemu.machine.translation import MemoryAccess, TranslationFault

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.machine.vcpu import VCpu
    from vtemu.vmx.cpu import InterruptPin, VmxCpu

CR0_PG = 1 << 31
HISTORY = 4096          # exits kept for `exits`
Build = Callable[[Callable[[bytes], None]], list["Partition"]]


class StopKind(Enum):
    STEP = "step"
    BREAKPOINT = "breakpoint"
    EXIT = "exit"
    MODE = "mode change"
    COUNT = "instruction count"
    WATCH = "watchpoint"
    INTERRUPTED = "interrupted"
    ENDED = "guest ended"
    HALTED = "halted"
    START = "start of history"


@dataclass(frozen=True)
class Stop:
    kind: StopKind
    position: int
    detail: str = ""
    record: TraceRecord | None = None
    address: int | None = None


@dataclass(frozen=True)
class CpuMode:
    """What `bm` watches: real/protected/long (IA-32e) mode, the code size, paging."""

    protected: bool
    long: bool
    bits: int
    paging: bool

    def describe(self, code_size: bool = True) -> str:
        name = "long" if self.long else "protected" if self.protected else "real"
        sub = f" ({self.bits}-bit code)" if code_size and (self.long or self.protected) else ""
        return f"{name} mode{sub}, paging {'on' if self.paging else 'off'}"

    def same_mode(self, other: "CpuMode") -> bool:
        """A mode change for `bm`: real/protected/long or paging, not the code size within."""
        return (self.protected, self.long, self.paging) == (other.protected, other.long, other.paging)


def cpu_mode(hflags: int, cr0: int) -> CpuMode:
    bits = 64 if hflags & HF_CS64 else 32 if hflags & HF_CS32 else 16
    return CpuMode(bool(hflags & HF_PE), bool(hflags & HF_LMA), bits, bool(cr0 & CR0_PG))


class _HeldPin:
    """The vCPU's interrupt line as the debugger passes it: held low while stepping asks for
    no interrupts (the PIC keeps them pending; they arrive once released)."""

    def __init__(self, pin: "InterruptPin") -> None:
        self.pin = pin
        self.held = False

    def intr_asserted(self) -> bool:
        return not self.held and self.pin.intr_asserted()

    def acknowledge(self) -> int:
        return self.pin.acknowledge()


@dataclass
class _Conditions:
    """What ends a forward run besides its target (cleared for each command)."""

    target_position: int | None = None
    target_retired: int | None = None
    exits_left: int | None = None          # `se N`
    stop_on_breakpoints: bool = True


class Session:
    """One guest partition under the debugger (its vCPU 0 is the one shown and stepped)."""

    def __init__(self, build: Build, console: Callable[[bytes], None] | None = None) -> None:
        self._build = build
        self._console = console or (lambda data: None)
        self.breakpoints: set[int] = set()             # linear addresses
        self.exit_breaks: list[tuple[str, ExitFilter]] = []
        self.count_breaks: set[int] = set()             # retired-instruction counts
        self.break_on_mode = False
        self.step_interrupts = True                     # False: hold interrupts while stepping
        self.watchpoints: dict[int, tuple[int, str]] = {}
        self.history: deque[TraceRecord] = deque(maxlen=HISTORY)
        self._journal: list[tuple[int, str, object]] = []
        self._printed_upto = 0          # output already shown up to this position
        self._boot()

    # --- the machine -----------------------------------------------------------------------
    def _boot(self) -> None:
        self.partitions = self._build(self._guest_output)
        self.partition = self.partitions[0]
        self.cpu: VmxCpu = self.partition.vcpus[0]
        self.runner = Runner(self.partitions)
        self._pins = []
        for cpu in self.partition.vcpus:
            if cpu.interrupts is not None:
                pin = _HeldPin(cpu.interrupts)
                cpu.interrupts = pin  # type: ignore[assignment]
                self._pins.append(pin)
            cpu.vcpu.set_debug_check(self._check_instruction)
        self.recorder = TraceRecorder(self.partition, sink=self._on_exits, chunk=1)
        self._watch_hooks: dict[int, tuple[tuple, list]] = {}
        self.history.clear()
        self.exits_seen = 0
        self._conditions = _Conditions()
        self._pending: Stop | None = None
        self._interrupt = False
        self._skip_first = False
        self._replaying = False
        self._mode = self.mode()
        self.last_stop = Stop(StopKind.START, 0)
        self._settle()

    def _guest_output(self, data: bytes) -> None:
        if not self._replaying and self.position >= self._printed_upto:
            self._console(data)

    @property
    def vcpu(self) -> "VCpu":
        return self.cpu.vcpu

    @property
    def position(self) -> int:
        """Steps taken since reset: instructions retired plus faults delivered (vCPU 0)."""
        return self.cpu.vcpu.retired_so_far + self.cpu.exceptions_delivered

    @property
    def retired(self) -> int:
        return self.cpu.vcpu.retired_so_far

    @property
    def ended(self) -> bool:
        return self.partition.ended

    def mode(self) -> CpuMode:
        return cpu_mode(self.vcpu.context.load().hflags, self.vcpu.read(U.UC_X86_REG_CR0))

    def hold_interrupts(self, held: bool) -> None:
        for pin in self._pins:
            pin.held = held

    def interrupt(self) -> None:
        """From a signal handler or another thread: stop at the next instruction."""
        self._interrupt = True

    # --- running forward -----------------------------------------------------------------
    def step(self, count: int = 1) -> Stop:
        """Exactly `count` steps, through exits, faults, INT n and block boundaries."""
        return self._forward(_Conditions(target_position=self.position + count,
                                         stop_on_breakpoints=False), stepping=True)

    def cont(self) -> Stop:
        return self._forward(_Conditions())

    def next_exits(self, count: int = 1) -> Stop:
        return self._forward(_Conditions(exits_left=count))

    def run_to_count(self, retired: int) -> Stop:
        return self._forward(_Conditions(target_retired=retired))

    def _forward(self, conditions: _Conditions, stepping: bool = False) -> Stop:
        if self.ended:
            return self._ended_stop()
        held = stepping and not self.step_interrupts
        self._journal_hold(held)
        self.hold_interrupts(held)
        try:
            stop = self._run(conditions)
        finally:
            self.hold_interrupts(False)
        self._printed_upto = max(self._printed_upto, self.position)
        self.last_stop = stop
        return stop

    def _run(self, conditions: _Conditions) -> Stop:
        self._conditions = conditions
        self._pending = None
        self._mode = self.mode()
        self._skip_first = True      # resuming at a breakpoint: its instruction runs first
        self._start_retired = self.retired
        self._refresh_watchpoints()
        while True:
            if self._interrupt:
                self._interrupt = False
                return self._stop(StopKind.INTERRUPTED, "interrupted")
            if self.ended:
                return self._ended_stop()
            reached = self._target_reached(conditions)
            if reached is not None:
                return reached
            self._round()
            if self._pending is not None and self._pending.kind is StopKind.WATCH:
                return self._complete_access(self._pending)
            if self._pending is not None:
                stop = self._confirm(self._pending)
                self._pending = None
                if stop is not None:
                    return stop
                self._skip_first = True

    def _round(self) -> None:
        partition = self.partition
        ran = False
        for cpu in partition.vcpus:
            if partition.ended or self._pending is not None:
                break
            ran |= cpu.run_slice(self._budget())
            partition.clock.run_due_timers()
            for each in partition.vcpus:
                each.settle()
        if not ran and not partition.ended:
            if any(pin.held for pin in self._pins):
                self._pending = Stop(StopKind.HALTED, 0, "the vCPU is halted and interrupts are held "
                                                         "while stepping (`set stepirq on` lets them in)")
                return
            self.runner._idle(partition)   # as the run loop: skip guest time to a deadline
            self._settle()

    def _budget(self) -> int:
        """Never past a timer deadline (as the run loop), nor past the target."""
        budget = self.partition.clock.instructions_until_deadline()
        limits = [COUNT_FOREVER if budget is None else budget]
        conditions = self._conditions
        if conditions.target_position is not None:
            limits.append(conditions.target_position - self.position)
        if conditions.target_retired is not None:
            limits.append(conditions.target_retired - self.retired)
        if not self._replaying:
            limits += [count - self.retired for count in self.count_breaks if count > self.retired]
        return max(1, min(limits))

    def _target_reached(self, conditions: _Conditions) -> Stop | None:
        if conditions.target_position is not None and self.position >= conditions.target_position:
            return self._stop(StopKind.STEP)
        if conditions.target_retired is not None and self.retired >= conditions.target_retired:
            return self._stop(StopKind.COUNT, f"instruction count {self.retired}")
        if not self._replaying and conditions.stop_on_breakpoints and self.retired in self.count_breaks \
                and self.retired > self._start_retired:
            return self._stop(StopKind.COUNT, f"instruction count {self.retired}")
        return None

    def _complete_access(self, watch: Stop) -> Stop:
        """A watchpoint stopped the vCPU before the accessing instruction: let it complete
        (one step, no breakpoints), then report, as gdb expects (after the access)."""
        self._pending = None
        self._run(_Conditions(target_position=self.position + 1, stop_on_breakpoints=False))
        return Stop(watch.kind, self.position, watch.detail, address=watch.address)

    def _confirm(self, pending: Stop) -> Stop | None:
        """A code stop stands only if, settled, the vCPU is still at that instruction (an
        interrupt delivered first means the instruction has not been reached yet)."""
        if pending.address is not None and pending.kind is StopKind.BREAKPOINT:
            if self.vcpu.linear_rip() != pending.address:
                return None
        return Stop(pending.kind, self.position, pending.detail, pending.record, pending.address)

    def _stop(self, kind: StopKind, detail: str = "") -> Stop:
        return Stop(kind, self.position, detail)

    def _ended_stop(self) -> Stop:
        result = self.partition.result
        detail = "" if result is None else f"{result.reason} (exit code {result.exit_code})"
        self.last_stop = Stop(StopKind.ENDED, self.position, detail)
        return self.last_stop

    # --- what stops a slice ------------------------------------------------------------------
    def _check_instruction(self, address: int) -> bool:
        """Runs before every guest instruction (the vCPU's debug check): True stops there."""
        if self._interrupt:
            self._interrupt = False
            self._pending = Stop(StopKind.INTERRUPTED, 0, "interrupted")
            return True
        if self._skip_first:
            self._skip_first = False
            return False
        if self._replaying or not self._conditions.stop_on_breakpoints:
            return False
        if address in self.breakpoints:
            self._pending = Stop(StopKind.BREAKPOINT, 0, f"breakpoint at {address:#x}", address=address)
            return True
        if self.break_on_mode:
            mode = self.mode()
            if not mode.same_mode(self._mode):
                self._pending = Stop(StopKind.MODE, 0, f"{self._mode.describe(code_size=False)} -> {mode.describe()}")
                return True
        return False

    def _on_exits(self, raws: Iterable[tuple]) -> None:
        for raw in raws:
            record = record_of(raw)
            self.history.append(record)
            self.exits_seen += 1
            if self._replaying:
                continue
            stop = self._exit_stop(record)
            if stop is not None and self._pending is None:
                self._pending = stop
                self.partition.vcpus[record.vcpu].vcpu.request_stop()

    def _exit_stop(self, record: TraceRecord) -> Stop | None:
        conditions = self._conditions
        if conditions.exits_left is not None:
            conditions.exits_left -= 1
            if conditions.exits_left <= 0:
                return Stop(StopKind.EXIT, 0, "", record)
        if not conditions.stop_on_breakpoints:
            return None
        for text, exit_filter in self.exit_breaks:
            if exit_filter.wants(record.reason) and exit_filter.matches(
                    record.reason, record.vcpu, record.rip, record.payload):
                return Stop(StopKind.EXIT, 0, f"exit breakpoint `{text}`", record)
        return None

    def _settle(self) -> None:
        for cpu in self.partition.vcpus:
            cpu.settle()

    # --- watchpoints (gdb Z2/Z3/Z4) --------------------------------------------------------
    # Unicorn's memory hooks see host-physical addresses in virtual-TLB mode: a watchpoint
    # watches what its linear address maps to, translated again before every run.
    def add_watchpoint(self, address: int, length: int, kind: str) -> None:
        """`kind`: write, read or access. The access completes, then the vCPU stops."""
        self.watchpoints[address] = (length, kind)
        self._refresh_watchpoints()

    def remove_watchpoint(self, address: int) -> None:
        self.watchpoints.pop(address, None)
        self._refresh_watchpoints()

    def _refresh_watchpoints(self) -> None:
        wanted = {address: (self._host_address(address), length, kind)
                  for address, (length, kind) in self.watchpoints.items()}
        if wanted == {address: hooked[0] for address, hooked in self._watch_hooks.items()}:
            return
        for _, hooks in self._watch_hooks.values():
            for hook in hooks:
                hook.remove()
        self._watch_hooks = {address: (placement, self._hook_watchpoint(address, *placement))
                             for address, placement in wanted.items()}
        for cpu in self.partition.vcpus:
            cpu.vcpu.flush_translations()

    def _host_address(self, linear: int) -> int | None:
        try:
            return self.vcpu.translate(linear, MemoryAccess.READ)
        except TranslationFault:
            return None     # not mapped now: nothing to watch until it is

    def _hook_watchpoint(self, address: int, hpa: int | None, length: int, kind: str) -> list:
        if hpa is None:
            return []
        kinds = {"write": unicorn.UC_HOOK_MEM_WRITE, "read": unicorn.UC_HOOK_MEM_READ,
                 "access": unicorn.UC_HOOK_MEM_READ | unicorn.UC_HOOK_MEM_WRITE}[kind]
        hooks = []
        for cpu in self.partition.vcpus:
            def hit(access: int, where: int, size: int, value: int, cpu: "VmxCpu" = cpu) -> bool:
                if not self._replaying and self._conditions.stop_on_breakpoints and self._pending is None:
                    what = "write" if access == unicorn.UC_MEM_WRITE else "read"
                    self._pending = Stop(StopKind.WATCH, 0, f"{what} of {size} bytes at "
                                         f"{address + where - hpa:#x}", address=address)
                    cpu.vcpu.request_stop_before()
                return True
            hooks.append(cpu.vcpu.engine.hook_memory(kinds, hit, hpa, hpa + length - 1))
        return hooks

    # --- state changes the user makes (journaled for reverse execution) ---------------------
    def _journal_hold(self, held: bool) -> None:
        last = next((value for _, kind, value in reversed(self._journal) if kind == "hold"), False)
        if last != held:
            self._journal.append((self.position, "hold", held))

    def write_register(self, register: int, value: int) -> None:
        self._journal.append((self.position, "register", (register, value)))
        self.vcpu.write(register, value)

    def write_memory(self, linear: int, data: bytes) -> None:
        """Raises TranslationFault (nothing written) when a page is not mapped writable."""
        self.vcpu.write_linear(linear, data)
        self._journal.append((self.position, "memory", (linear, data)))

    def _apply(self, kind: str, value: object) -> None:
        if kind == "hold":
            self.hold_interrupts(bool(value))
        elif kind == "register":
            register, number = value  # type: ignore[misc]
            self.vcpu.write(register, number)
        elif kind == "memory":
            linear, data = value  # type: ignore[misc]
            self.vcpu.write_linear(linear, data)

    # --- running backward ----------------------------------------------------------------
    def reverse_step(self, count: int = 1) -> Stop:
        target = max(0, self.position - count)
        here = self.position
        self._rewind(target)
        kind = StopKind.START if count > here else StopKind.STEP
        self.last_stop = Stop(kind, self.position)
        return self.last_stop

    def reverse_continue(self) -> Stop:
        """Back to the latest stop condition (breakpoint, exit break, mode change, count
        break) before the current position, or to reset if there is none."""
        here = self.position
        hits = self._hits_before(here)
        target = hits[-1] if hits else (0, Stop(StopKind.START, 0))
        self._rewind(target[0])
        stop = target[1]
        self.last_stop = Stop(stop.kind, self.position, stop.detail, stop.record, stop.address)
        return self.last_stop

    def _hits_before(self, here: int) -> list[tuple[int, Stop]]:
        """Re-execute from reset to `here`, noting where each stop condition holds."""
        journal = [entry for entry in self._journal if entry[0] <= here]
        self._restart()
        hits: list[tuple[int, Stop]] = []
        self._replay(journal, here, hits)
        return [hit for hit in hits if hit[0] < here]

    def _rewind(self, target: int) -> None:
        journal = [entry for entry in self._journal if entry[0] <= target]
        self._restart()
        self._replay(journal, target, None)
        self._journal = journal

    def _restart(self) -> None:
        self.recorder.detach()
        self._boot()

    def _replay(self, journal: list[tuple[int, str, object]], target: int,
                hits: list[tuple[int, Stop]] | None) -> None:
        """Run to `target` applying the journal; with `hits`, stop at every condition on the
        way and note it (as a forward `c` would have stopped), without stopping the replay."""
        entries = sorted(journal, key=lambda entry: entry[0])
        self._replaying = hits is None
        try:
            for position, kind, value in entries + [(target, "", None)]:
                self._run_until(position, hits)
                if kind:
                    self._apply(kind, value)
        finally:
            self._replaying = False
            self.hold_interrupts(False)

    def _run_until(self, position: int, hits: list[tuple[int, Stop]] | None) -> None:
        held = any(pin.held for pin in self._pins)
        while self.position < position and not self.ended:
            stop = self._run(_Conditions(target_position=position, stop_on_breakpoints=hits is not None))
            self.hold_interrupts(held)
            if stop.kind not in (StopKind.STEP, StopKind.ENDED) and hits is not None:
                hits.append((stop.position, stop))
            if stop.kind is StopKind.HALTED:
                break
