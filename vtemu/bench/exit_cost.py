"""What a VM exit costs, and what vtemu costs on code that never exits.

Each measurement boots a tiny guest through the firmware and times, with the host clock,
only the guest's measured loop: the guest marks its start and end with writes to port E9h
(a port no device claims), and an exit observer timestamps those two exits. Results are
medians over repeats, all taken in one run so they can be compared:

* exit round trip (µs) for OUT (port 80h), CPUID and VMCALL loops, minus the same loop's
  cost without the exiting instruction;
* exit-free throughput: a compute loop under vtemu vs raw Unicorn running the same bytes
  with no hooks and no VMM (the ceiling), with guest time not live (uncounted) and live
  (counted: what deterministic timekeeping costs while a timer is armed).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import unicorn
import unicorn.x86_const as U
from keystone import KS_ARCH_X86, KS_MODE_32, Ks

from vtemu.asm import build_guest
from vtemu.hv.boot import build_partitions
from vtemu.hv.handlers.common import done
from vtemu.hv.partition import PartitionSpec
from vtemu.hv.runloop import RunLimits, Runner
from vtemu.images import firmware_image
from vtemu.vmx.reasons import ExitReason

MARK_PORT = 0xE9
GUEST = """
.include "multiboot.inc"
.code32
_start:
    mov esp, stack_top
    {setup}
    mov dx, {mark}
    mov al, 1
    out dx, al
    mov ebp, {iterations}
loop_top:
    {body}
    dec ebp
    jnz loop_top
    mov dx, {mark}
    mov al, 2
    out dx, al
    mov dx, 0xF4
    xor eax, eax
    out dx, eax
    hlt
MULTIBOOT_IMAGE_END 0x1000
.equ stack_top, _bss_end
"""
COMPUTE_BODY = "add eax, ebp; xor ecx, eax; rol ecx, 3; lea edx, [ecx + eax*2]"
LOOPS = {
    "out": "out 0x80, al",
    "cpuid": "xor eax, eax; cpuid",
    "vmcall": "vmcall",
    "baseline": "nop",
}


@dataclass(frozen=True)
class Measurement:
    name: str
    median_us: float
    samples: tuple[float, ...]
    exits_per_iteration: float     # counted inside the measured window: 1.0 for an exit loop


@dataclass(frozen=True)
class LoopRun:
    seconds: float                  # host time between the guest's start and end marks
    exits: int                      # VM exits between the marks (the end mark excluded)


def loop_image(body: str, iterations: int, setup: str = "") -> bytes:
    """A flat loop guest running `body` `iterations` times between two marks on port E9h."""
    source = GUEST.format(setup=setup, mark=MARK_PORT, iterations=iterations, body=body)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bench.S"
        path.write_text(source)
        return build_guest(path)


def _timed_guest_loop(image: bytes, complete_vmcall: bool = False, clock_live: bool = False) -> LoopRun:
    """Boot the guest and time its loop between the two marks."""
    marks: list[int] = []
    exits_inside = 0
    partitions = build_partitions([PartitionSpec("bench", image)], firmware_image(),
                                  lambda index, spec: lambda data: None)
    partition = partitions[0]
    if complete_vmcall:
        partition.handlers[ExitReason.VMCALL] = lambda exit, cpu, part: done(exit, cpu)

    def observe(exit: object, outcome: object, elapsed_ns: int) -> None:
        nonlocal exits_inside
        if getattr(exit, "detail", None) != f"out {MARK_PORT:#x}":
            exits_inside += len(marks) == 1
            return
        if clock_live and not marks:
            # A far timer deadline at the loop's start: from here every instruction counts,
            # as in a guest that has armed its timer after booting.
            partition.clock.schedule(1 << 60, lambda: None)
        marks.append(time.perf_counter_ns())

    partition.exit_observers.append(observe)
    Runner(partitions, RunLimits(timeout_s=600)).run()
    if len(marks) != 2 or partition.result is None or partition.result.exit_code != 0:
        raise RuntimeError(f"benchmark guest failed: {partition.result}")
    return LoopRun((marks[1] - marks[0]) / 1e9, exits_inside)


def exit_round_trips(iterations: int = 20000, repeats: int = 5) -> list[Measurement]:
    """Median µs per exit round trip, net of the loop's own instructions."""
    images = {name: loop_image(body, iterations) for name, body in LOOPS.items()}
    runs: dict[str, list[LoopRun]] = {name: [] for name in LOOPS}
    for _ in range(repeats):
        for name, image in images.items():  # alternate so host drift hits every loop alike
            runs[name].append(_timed_guest_loop(image, complete_vmcall=name == "vmcall"))
    baseline = statistics.median(run.seconds for run in runs["baseline"])
    results = []
    for name in ("out", "cpuid", "vmcall"):
        per_exit = [(run.seconds - baseline) / iterations * 1e6 for run in runs[name]]
        exits = statistics.median(run.exits for run in runs[name])
        results.append(Measurement(name, statistics.median(per_exit), tuple(per_exit),
                                   exits / iterations))
    return results


def _raw_unicorn_loop(iterations: int) -> float:
    """The same loop bytes on a bare Unicorn engine: no hooks, no VMM, flat 32-bit memory."""
    source = f"mov ebp, {iterations}; loop_top: {COMPUTE_BODY}; dec ebp; jnz loop_top; hlt"
    code, _ = Ks(KS_ARCH_X86, KS_MODE_32).asm(source, 0x100000)
    engine = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
    engine.mem_map(0, 0x200000)
    engine.mem_write(0x100000, bytes(code))
    engine.reg_write(U.UC_X86_REG_ESP, 0x8000)
    start = time.perf_counter()
    engine.emu_start(0x100000, 0x100000 + len(code))
    return time.perf_counter() - start


def exit_free_throughput(iterations: int = 20_000_000, repeats: int = 3) -> dict[str, float]:
    """Guest-loop seconds under vtemu (uncounted and counted) and raw Unicorn; ratios to raw."""
    image = loop_image(COMPUTE_BODY, iterations)
    raw, free, counted = [], [], []
    exits = 0
    for _ in range(repeats):
        raw.append(_raw_unicorn_loop(iterations))
        for runs, live in ((free, False), (counted, True)):
            run = _timed_guest_loop(image, clock_live=live)
            runs.append(run.seconds)
            exits += run.exits
    raw_s, free_s, counted_s = (statistics.median(x) for x in (raw, free, counted))
    instructions = iterations * 6
    return {
        "iterations": iterations, "exits_in_loop": exits,
        "raw_unicorn_s": raw_s, "vtemu_s": free_s, "vtemu_counted_s": counted_s,
        "ratio_vs_raw": raw_s / free_s, "counted_ratio_vs_raw": raw_s / counted_s,
        "raw_ns_per_insn": raw_s / instructions * 1e9,
        "vtemu_ns_per_insn": free_s / instructions * 1e9,
        "vtemu_counted_ns_per_insn": counted_s / instructions * 1e9,
    }


@dataclass(frozen=True)
class ExitCostReport:
    round_trips: list[Measurement]
    throughput: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        return {"round_trips": [{"loop": m.name, "median_us": round(m.median_us, 3),
                                 "samples_us": [round(x, 3) for x in m.samples],
                                 "exits_per_iteration": m.exits_per_iteration}
                                for m in self.round_trips],
                "exit_free": self.throughput}


def measure(quick: bool = False, repeats: int | None = None) -> ExitCostReport:
    """The whole exit-cost suite in one run; `quick` shrinks the loops (a smoke run, noisy)."""
    exit_iterations, free_iterations = (2000, 200_000) if quick else (20000, 20_000_000)
    return ExitCostReport(
        exit_round_trips(exit_iterations, repeats or (2 if quick else 5)),
        exit_free_throughput(free_iterations, repeats or (1 if quick else 3)))


def main() -> None:
    report = measure()
    for measurement in report.round_trips:
        print(f"{measurement.name:>7} exit round trip: {measurement.median_us:7.2f} µs (median)")
    throughput = report.throughput
    print(f"exit-free loop: vtemu {throughput['vtemu_ns_per_insn']:.2f} ns/insn, raw Unicorn "
          f"{throughput['raw_ns_per_insn']:.2f} ns/insn -> {throughput['ratio_vs_raw']:.3f}x raw")
    print(f"with guest time live (counted): {throughput['vtemu_counted_ns_per_insn']:.2f} ns/insn "
          f"-> {throughput['counted_ratio_vs_raw']:.3f}x raw")


if __name__ == "__main__":
    main()
