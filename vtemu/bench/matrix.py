"""The benchmark matrix: every benchmark x mode x paging scheme, measured in one run.

Procedure (what the report's numbers mean):

* Images: each benchmark is assembled once per set of mode defines (modes/SOURCE_DEFINES: pv
  runs the enlightened build of the same source).
* Counts: each benchmark has a default iteration count (catalog.py), sized for a fraction of
  a second under vtx. Where modes differ by orders of magnitude (a callout or an exit per
  iteration against none), one count cannot suit all, so unless --iterations fixes it the
  first warm-up run of each cell is a calibration: it runs default/100 iterations (at least
  2), and the cell's count becomes what fills about `target_s` of loop at the rate seen,
  capped at the default. Counts are per cell and reported; results are per iteration.
* Rounds: `warmup` rounds, then `repeats` rounds; each round runs every cell once, in an
  order rotated by one cell per round, so slow drift of the host (thermal, other load) is
  spread over all cells alike. Warm-up samples are kept in the raw data but marked and never
  used in a median.
* A sample is one fresh boot. Wall time per iteration is the host time between the guest's
  START and END marks (vtemu/bench/probe.py) divided by the iterations the guest reported:
  the boot and the report are outside the window, so no differencing is needed (QEMU, which
  has no bench port, is differenced instead: baselines.py). `boot` is timed as the whole run.
* Events per iteration (VM exits by reason, BT callouts by kind, hypercalls by call code, TLB
  fills, page-walk references, translation work) are the counter deltas over the same window
  divided by the iterations; runs are deterministic, so they are the same in every sample
  (the median is reported).
* Guest instructions per iteration come from two extra runs with guest time live (every
  instruction counted, which is 10-20x slower, so with a small count n and 2n), differenced:
  (I(2n) - I(n)) / n, which cancels the mark instructions.
* A cell that cannot run (a mode that refuses a guest, a wrong count, a timeout, a VMM
  error) is reported as failed with a one-line reason and not run again; the matrix goes on.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vtemu.asm import build_guest
from vtemu.bench import baselines
from vtemu.bench.catalog import Benchmark
from vtemu.bench.cost_model import CostModel, default_model, events_per_iteration
from vtemu.bench.probe import BenchProbe, Counters, snapshot
from vtemu.errors import VtemuError
from vtemu.hv.boot import build_partitions
from vtemu.hv.partition import PartitionSpec
from vtemu.hv.runloop import RunLimits, Runner
from vtemu.images import firmware_image
from vtemu.modes import SOURCE_DEFINES

RAW_UNICORN = "raw-unicorn"
QEMU_TCG = "qemu-tcg"
NO_PAGING = "-"
GUEST_EXIT = "the guest wrote to isa-debug-exit"
FAR_FUTURE_NS = 1 << 60
CALIBRATION_DIVISOR = 100
# QEMU runs its loops several times faster than vtemu, and t(2N) - t(N) must stand well
# above the noise of starting a process (tens of ms): it runs this many times the count.
QEMU_ITERATION_FACTOR = 20
QEMU_BENCHMARKS = ("compute", "boot")


@dataclass(frozen=True)
class Cell:
    benchmark: str
    mode: str
    paging: str

    @property
    def baseline(self) -> bool:
        return self.mode in (RAW_UNICORN, QEMU_TCG)


@dataclass
class Sample:
    cell: Cell
    round: int
    warmup: bool
    iterations: int
    wall_ns: int
    counters: Counters = field(default_factory=dict)

    @property
    def ns_per_iteration(self) -> float:
        return self.wall_ns / self.iterations


@dataclass
class CellResult:
    cell: Cell
    iterations: int
    samples: list[Sample] = field(default_factory=list)
    failure: str | None = None
    instructions_per_iteration: float | None = None
    instructions_note: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and bool(self.timed)

    @property
    def timed(self) -> list[float]:
        return [s.ns_per_iteration for s in self.samples if not s.warmup]

    @property
    def median_ns(self) -> float | None:
        return statistics.median(self.timed) if self.timed else None

    @property
    def spread(self) -> float | None:
        """(max - min) / median of the timed samples: 0.1 means the samples span 10%."""
        timed = self.timed
        if not timed or not statistics.median(timed):
            return None
        return (max(timed) - min(timed)) / statistics.median(timed)

    def per_iteration(self) -> dict[str, float]:
        """Median over the timed samples of each counter, per iteration."""
        timed = [s for s in self.samples if not s.warmup] or self.samples
        names = sorted({name for s in timed for name in s.counters if name != "instructions"})
        return {name: statistics.median(s.counters.get(name, 0.0) / s.iterations for s in timed)
                for name in names}


@dataclass
class MatrixConfig:
    benchmarks: Sequence[Benchmark]
    modes: Sequence[str]
    pagings: Sequence[str]
    repeats: int = 3
    warmup: int = 1
    iterations: int | None = None          # overrides every benchmark's default
    scale: int = 1                         # divides every default (--quick), to at least 2
    target_s: float = 0.5                  # calibration: loop time a timed run aims at
    count_iterations: int = 2              # n of the counted pair (n and 2n)
    timeout_s: float = 300.0
    raw_unicorn: bool = True
    qemu: bool = True
    cost_model: CostModel = field(default_factory=default_model)

    def iterations_for(self, benchmark: Benchmark) -> int:
        if benchmark.whole_run:
            return 1
        if self.iterations is not None:
            return self.iterations
        return max(2, benchmark.default_iterations // self.scale)


@dataclass
class MatrixResult:
    config: MatrixConfig
    cells: list[CellResult]
    host_seconds: float = 0.0

    def modeled_cycles(self, result: CellResult) -> float | None:
        if not result.ok or result.cell.baseline:
            return None
        events = events_per_iteration(result.per_iteration(), result.instructions_per_iteration)
        return self.config.cost_model.cycles(events)

    def cell(self, benchmark: str, mode: str, paging: str) -> CellResult | None:
        for result in self.cells:
            if result.cell == Cell(benchmark, mode, paging):
                return result
        return None


@dataclass(frozen=True)
class GuestRun:
    """One boot of a benchmark guest: its loop's wall time, count and counters, and COM1."""

    wall_ns: int
    iterations: int
    counters: Counters
    serial: bytes


class RunFailed(Exception):
    """A benchmark run ended some other way than the guest reporting its count."""


Progress = Callable[[str], None]


class Matrix:
    def __init__(self, config: MatrixConfig, progress: Progress | None = None) -> None:
        self.config = config
        self.progress = progress or (lambda description: None)
        self.firmware = firmware_image()
        self._images: dict[tuple[str, tuple[tuple[str, str], ...]], bytes | str] = {}
        self._raw: dict[str, baselines.RawUnicornLoop] = {}
        self._scratch = tempfile.TemporaryDirectory(prefix="vtemu-bench-")
        self._disks: dict[int, Path] = {}

    # --- the plan -----------------------------------------------------------------------------
    def cells(self) -> list[Cell]:
        config = self.config
        cells = [Cell(b.name, mode, paging) for b in config.benchmarks
                 for mode in config.modes for paging in config.pagings]
        for benchmark in config.benchmarks:
            if config.raw_unicorn and benchmark.exit_free:
                cells.append(Cell(benchmark.name, RAW_UNICORN, NO_PAGING))
            if config.qemu and benchmark.name in QEMU_BENCHMARKS and baselines.qemu_available():
                cells.append(Cell(benchmark.name, QEMU_TCG, NO_PAGING))
        return cells

    def runs_planned(self) -> int:
        vtemu_cells = sum(not cell.baseline for cell in self.cells())
        return len(self.cells()) * (self.config.warmup + self.config.repeats) + 2 * vtemu_cells

    # --- running ------------------------------------------------------------------------------
    def run(self) -> MatrixResult:
        start = time.perf_counter()
        try:
            results = self._run_rounds()
            for result in results:
                if result.ok and not result.cell.baseline:
                    self._count_instructions(result)
        finally:
            self.close()
        return MatrixResult(self.config, results, time.perf_counter() - start)

    def close(self) -> None:
        """Remove the scratch files (disk images)."""
        self._scratch.cleanup()

    def _run_rounds(self) -> list[CellResult]:
        by_name = {b.name: b for b in self.config.benchmarks}
        cells = self.cells()
        results = {cell: CellResult(cell, self._iterations(by_name[cell.benchmark], cell))
                   for cell in cells}
        rounds = self.config.warmup + self.config.repeats
        for round_index in range(rounds):
            shift = round_index % len(cells) if cells else 0
            for cell in cells[shift:] + cells[:shift]:
                self.progress(f"{cell.benchmark} {cell.mode} {cell.paging}")
                self._run_cell(results[cell], by_name[cell.benchmark], round_index)
        return [results[cell] for cell in cells]

    def _run_cell(self, result: CellResult, benchmark: Benchmark, round_index: int) -> None:
        """One sample of a cell (none once it has failed); the first warm-up calibrates."""
        if result.failure is not None:
            return
        calibrating = self._calibrates(benchmark, result.cell, round_index)
        iterations = max(2, result.iterations // CALIBRATION_DIVISOR) if calibrating else result.iterations
        try:
            sample = self._sample(benchmark, result.cell, iterations)
        except (RunFailed, baselines.BaselineError, VtemuError) as failure:
            result.failure = _one_line(str(failure))
            return
        except Exception as error:           # a VMM bug must not end the matrix
            result.failure = _one_line(f"{type(error).__name__}: {error}")
            return
        sample.round = round_index
        sample.warmup = round_index < self.config.warmup
        result.samples.append(sample)
        if calibrating:
            result.iterations = self._calibrated(sample, result.iterations)

    def _iterations(self, benchmark: Benchmark, cell: Cell) -> int:
        count = self.config.iterations_for(benchmark)
        return count * QEMU_ITERATION_FACTOR if cell.mode == QEMU_TCG and not benchmark.whole_run else count

    def _calibrates(self, benchmark: Benchmark, cell: Cell, round_index: int) -> bool:
        return (round_index == 0 and self.config.warmup > 0 and self.config.iterations is None
                and not benchmark.whole_run and not cell.baseline)

    def _calibrated(self, sample: Sample, default: int) -> int:
        per_iteration = max(sample.ns_per_iteration, 1.0)
        return max(2, min(default, int(self.config.target_s * 1e9 / per_iteration)))

    def _sample(self, benchmark: Benchmark, cell: Cell, iterations: int) -> Sample:
        if cell.mode == RAW_UNICORN:
            raw = self._raw_loop(benchmark)
            measured = raw.run(iterations)
            return Sample(cell, 0, False, measured.iterations, measured.wall_ns)
        if cell.mode == QEMU_TCG:
            image = self._image(benchmark, "vtx")
            measured = baselines.qemu_loop_sample(image, iterations, benchmark.whole_run)
            return Sample(cell, 0, False, measured.iterations, measured.wall_ns)
        run = self.run_guest(benchmark, cell.mode, cell.paging, iterations)
        return Sample(cell, 0, False, run.iterations, run.wall_ns, run.counters)

    def run_guest(self, benchmark: Benchmark, mode: str, paging: str, iterations: int,
                  count: bool = False) -> GuestRun:
        """One boot of the benchmark, checked (RunFailed otherwise). `count`: guest time is
        live from the reset vector, so every instruction is counted."""
        image = self._image(benchmark, mode)
        serial = bytearray()
        spec = PartitionSpec(name=benchmark.name, kernel=image, cmdline=f"iterations={iterations}",
                             mode=mode, paging=paging, disk=self._disk(benchmark.disk_sectors))
        partition = build_partitions([spec], self.firmware, lambda index, spec: serial.extend)[0]
        probe = BenchProbe(partition).attach()
        if count:
            partition.clock.schedule(FAR_FUTURE_NS, lambda: None)
        runner = Runner([partition], RunLimits(timeout_s=self.config.timeout_s))
        runner.run()
        _check_ending(partition.result, serial, probe, benchmark, iterations)
        if benchmark.whole_run:
            return GuestRun(int(runner.wall_s * 1e9), 1, snapshot(partition), bytes(serial))
        counters = probe.loop_counters()
        assert counters is not None and probe.window_ns is not None and probe.reported is not None
        return GuestRun(probe.window_ns, probe.reported, counters, bytes(serial))

    def _count_instructions(self, result: CellResult) -> None:
        benchmark = next(b for b in self.config.benchmarks if b.name == result.cell.benchmark)
        cell = result.cell
        self.progress(f"{cell.benchmark} {cell.mode} {cell.paging} (counted)")
        n = 1 if benchmark.whole_run else min(self.config.count_iterations, result.iterations)
        try:
            single = self.run_guest(benchmark, cell.mode, cell.paging, n, count=True).counters
            if benchmark.whole_run:
                result.instructions_per_iteration = single.get("instructions", 0.0)
                return
            double = self.run_guest(benchmark, cell.mode, cell.paging, 2 * n, count=True).counters
        except Exception as error:
            result.instructions_note = _one_line(f"counted run failed: {error}")
            return
        result.instructions_per_iteration = (double["instructions"] - single["instructions"]) / n

    # --- images, disks, baselines -------------------------------------------------------------
    def _image(self, benchmark: Benchmark, mode: str) -> bytes:
        defines = tuple(sorted(SOURCE_DEFINES.get(mode, {}).items()))
        key = (benchmark.name, defines)
        if key not in self._images:
            try:
                self._images[key] = build_guest(benchmark.source, dict(defines))
            except VtemuError as error:
                self._images[key] = f"assembly failed: {error}"
        image = self._images[key]
        if isinstance(image, str):
            raise RunFailed(image)
        return image

    def _disk(self, sectors: int) -> Path | None:
        """A fresh image in which every dword of sector L is L (benchmarks/disk.S checks it)."""
        if not sectors:
            return None
        if sectors not in self._disks:
            path = Path(self._scratch.name) / f"disk-{sectors}.img"
            path.write_bytes(b"".join(lba.to_bytes(4, "little") * 128 for lba in range(sectors)))
            self._disks[sectors] = path
        return self._disks[sectors]

    def _raw_loop(self, benchmark: Benchmark) -> baselines.RawUnicornLoop:
        if benchmark.name not in self._raw:
            self._raw[benchmark.name] = baselines.RawUnicornLoop(benchmark.source)
        return self._raw[benchmark.name]


def _check_ending(result: object, serial: bytes, probe: BenchProbe, benchmark: Benchmark,
                  iterations: int) -> None:
    """Anything but the guest's own clean report of the count it was asked for is a failure."""
    exit_code = getattr(result, "exit_code", None)
    reason = getattr(result, "reason", "the run did not end")
    if reason != GUEST_EXIT or exit_code != 0:
        last = _last_line(serial)
        detail = f"guest exit code {exit_code}" if reason == GUEST_EXIT else reason
        raise RunFailed(detail + (f" (COM1: {last})" if last else ""))
    if probe.problems:
        raise RunFailed(probe.problems[0])
    expected = 1 if benchmark.whole_run else iterations      # boot: one boot per run, always
    if probe.reported != expected:
        raise RunFailed(f"the guest reported {probe.reported} iterations, asked for {expected}")
    if not benchmark.whole_run and probe.window_ns is None:
        raise RunFailed("the guest never marked the start and end of its loop")


def _last_line(serial: bytes) -> str:
    lines = [line for line in bytes(serial).decode(errors="replace").splitlines() if line.strip()]
    return lines[-1][:120] if lines else ""


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if lines else "failed")[:200]
