"""What `--stats` and tracing cost on an exit-heavy guest, as ratios to a plain run.

    .venv/bin/python benchmarks/observability_overhead.py [--quick] [--iterations N] [--repeats N]

The guest loops over `out 0x80, al` and `cpuid` (two exits per iteration: an I/O exit, whose
breakdown key and payload come from the qualification, and a CPUID exit, whose leaf is read
from EAX before the handler). Each configuration attaches what the command line attaches:

    plain         nothing (`vtemu run`)
    stats         breakdown collection (`vtemu run --stats`; the table itself is not timed)
    trace         a trace kept in memory (records only)
    trace+jsonl   `vtemu trace --jsonl`: records streamed to a file, formatting included
    trace+chrome  `vtemu trace`: Chrome trace-event JSON, formatting included

All configurations run in one process, alternating, several times (a full garbage
collection before each, so no run pays for its predecessor's garbage); the table gives the
median host time of each and its ratio to the median plain run.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.table import Table

from vtemu.asm import build_guest
from vtemu.debug.breakdown import collect_breakdowns
from vtemu.debug.trace import TraceSession
from vtemu.debug.trace_export import open_writer
from vtemu.hv.boot import build_partitions
from vtemu.hv.partition import Partition, PartitionSpec
from vtemu.hv.runloop import RunLimits, Runner
from vtemu.images import firmware_image

GUEST = """
.include "multiboot.inc"
.code32
_start:
    mov ebp, {iterations}
loop_top:
    out 0x80, al
    xor eax, eax
    cpuid
    dec ebp
    jnz loop_top
    mov dx, 0xF4
    xor eax, eax
    out dx, eax
    hlt
MULTIBOOT_IMAGE_END
"""

Finish = Callable[[], object]
Attach = Callable[[list[Partition], Path], Finish]


def _nothing(partitions: list[Partition], scratch: Path) -> Finish:
    return lambda: None


def _stats(partitions: list[Partition], scratch: Path) -> Finish:
    collect_breakdowns(partitions)
    return lambda: None


def _trace_memory(partitions: list[Partition], scratch: Path) -> Finish:
    session = TraceSession(partitions)
    return session.close


def _trace_file(jsonl: bool) -> Attach:
    def attach(partitions: list[Partition], scratch: Path) -> Finish:
        path = scratch / ("trace.jsonl" if jsonl else "trace.json")
        writer = open_writer(path, {p.index: p.name for p in partitions}, jsonl)
        return TraceSession(partitions, writer=writer).close
    return attach


CONFIGURATIONS: dict[str, Attach] = {
    "plain": _nothing,
    "stats": _stats,
    "trace": _trace_memory,
    "trace+jsonl": _trace_file(jsonl=True),
    "trace+chrome": _trace_file(jsonl=False),
}


def _image(iterations: int) -> bytes:
    with tempfile.TemporaryDirectory() as directory:
        source = Path(directory) / "outloop.S"
        source.write_text(GUEST.format(iterations=iterations))
        return build_guest(source)


def _timed_run(image: bytes, firmware: bytes, attach: Attach, scratch: Path) -> tuple[float, int]:
    """Host seconds for the run (and, for traces, writing the file); the exits taken."""
    partitions = build_partitions([PartitionSpec("outloop", image)], firmware,
                                  lambda index, spec: lambda data: None)
    gc.collect()     # the previous run's cyclic garbage is collected here, not during this run
    start = time.perf_counter()
    finish = attach(partitions, scratch)
    Runner(partitions, RunLimits(timeout_s=600)).run()
    finish()
    seconds = time.perf_counter() - start
    partition = partitions[0]
    if partition.result is None or partition.result.exit_code != 0:
        raise RuntimeError(f"benchmark guest failed: {partition.result}")
    return seconds, partition.stats.total


def measure(iterations: int, repeats: int) -> dict[str, list[float]]:
    image, firmware = _image(iterations), firmware_image()
    samples: dict[str, list[float]] = {name: [] for name in CONFIGURATIONS}
    exits: set[int] = set()
    with tempfile.TemporaryDirectory() as directory:
        _timed_run(image, firmware, _nothing, Path(directory))            # warm-up (imports, caches)
        for _ in range(repeats):
            for name, attach in CONFIGURATIONS.items():  # alternate: host drift hits all alike
                seconds, count = _timed_run(image, firmware, attach, Path(directory))
                samples[name].append(seconds)
                exits.add(count)
    if len(exits) != 1:
        raise RuntimeError(f"runs took different numbers of exits: {sorted(exits)}")
    samples["exits"] = [float(exits.pop())]
    return samples


def report(samples: dict[str, list[float]], iterations: int, repeats: int) -> Table:
    exits = int(samples["exits"][0])
    plain = statistics.median(samples["plain"])
    table = Table(title=f"Observability overhead: {iterations} × (OUT + CPUID), {exits} VM exits per run, "
                        f"median of {repeats}", title_justify="left")
    for column in ("configuration", "median s", "× plain", "+µs per exit", "samples s"):
        table.add_column(column, justify="left" if column in ("configuration", "samples s") else "right")
    for name in CONFIGURATIONS:
        median = statistics.median(samples[name])
        table.add_row(name, f"{median:.3f}", f"{median / plain:.3f}", f"{(median - plain) / exits * 1e6:+.2f}",
                      " ".join(f"{s:.3f}" for s in samples[name]))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short, noisier run")
    parser.add_argument("--iterations", type=int, help="guest loop iterations (default 20000; quick 3000)")
    parser.add_argument("--repeats", type=int, help="runs per configuration (default 5; quick 3)")
    args = parser.parse_args(argv)
    iterations = args.iterations or (3000 if args.quick else 20000)
    repeats = args.repeats or (3 if args.quick else 5)
    samples = measure(iterations, repeats)
    Console(highlight=False).print(report(samples, iterations, repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
