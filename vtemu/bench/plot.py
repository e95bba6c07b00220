"""PNG plots of the benchmark matrix: grouped bars per benchmark, one bar per mode/paging, log
scale. Measured time and modeled cycles are separate figures (two files), never one axis:
`--plot out.png` writes out.png (measured) and out.modeled.png (modeled)."""

from __future__ import annotations

import math
from pathlib import Path

from vtemu.bench.matrix import CellResult, MatrixResult
from vtemu.bench.matrix_report import MEASURED_LABEL, MODELED_LABEL


def write_plots(result: MatrixResult, path: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")              # files only, no display
    modeled_path = path.with_name(f"{path.stem}.modeled{path.suffix or '.png'}")
    _figure(result, path, lambda cell: cell.median_ns, "ns per iteration (log)", MEASURED_LABEL,
            include_baselines=True)
    _figure(result, modeled_path, result.modeled_cycles, "cycles per iteration (log)", MODELED_LABEL,
            include_baselines=False)
    return [path, modeled_path]


def _figure(result: MatrixResult, path: Path, value, ylabel: str, title: str,
            include_baselines: bool) -> None:
    import matplotlib.pyplot as plt
    benchmarks = list(dict.fromkeys(c.cell.benchmark for c in result.cells))
    series = list(dict.fromkeys(_series(c) for c in result.cells
                                if include_baselines or not c.cell.baseline))
    width = 0.8 / max(1, len(series))
    figure, axes = plt.subplots(figsize=(max(8.0, 1.1 * len(benchmarks) + 2), 5.5))
    for index, name in enumerate(series):
        xs, heights = [], []
        for position, benchmark in enumerate(benchmarks):
            cell = next((c for c in result.cells
                         if c.cell.benchmark == benchmark and _series(c) == name), None)
            height = value(cell) if cell is not None and cell.ok else None
            if height is not None and height > 0 and math.isfinite(height):
                xs.append(position + (index - (len(series) - 1) / 2) * width)
                heights.append(height)
        axes.bar(xs, heights, width=width, label=name)
    axes.set_yscale("log")
    axes.set_xticks(range(len(benchmarks)))
    axes.set_xticklabels(benchmarks, rotation=45, ha="right")
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=110)
    plt.close(figure)


def _series(cell: CellResult) -> str:
    return cell.cell.mode if cell.cell.baseline else f"{cell.cell.mode}/{cell.cell.paging}"
