"""The benchmark matrix as a terminal table, JSON, CSV (every raw sample) and a markdown summary.

Two kinds of numbers appear side by side and are always labelled: MEASURED host wall time
(what vtemu, an emulator written in Python around Unicorn, took; not hardware time) and
MODELED cycles (the cost model's sum of counted events x per-event cost; not a measurement).
"""

from __future__ import annotations

import csv
import statistics
from typing import TextIO

from rich.console import Console
from rich.table import Table

from vtemu.bench.cost_model import events_per_iteration
from vtemu.bench.matrix import QEMU_TCG, RAW_UNICORN, CellResult, MatrixResult
from vtemu.bench.paper import PAPER, PAPER_CITATION, verdicts

MEASURED_LABEL = "measured: host wall time of the emulator per iteration (not hardware time)"
MODELED_LABEL = "modeled: cycles per iteration from the cost model (events x cost; not measured)"
CSV_COLUMNS = ("benchmark", "mode", "paging", "round", "warmup", "iterations", "wall_ns",
               "ns_per_iteration", "exits", "callouts", "hypercalls", "tlb_fills",
               "walk_references", "status", "failure")


# --- the terminal ---------------------------------------------------------------------------
def print_matrix(result: MatrixResult, stream: TextIO) -> None:
    console = Console(file=stream, highlight=False, width=None if stream.isatty() else 200)
    console.print(_matrix_table(result))
    console.print(_paper_table(result))
    for line in raw_ratio_lines(result):
        console.print(line)
    console.print(f"cost model: {result.config.cost_model.origin} "
                  f"({', '.join(f'{k} {v:g}' for k, v in result.config.cost_model.costs.items())} cycles)")
    console.print(f"{len(result.cells)} cells, {result.host_seconds:.1f} s of host time")


def _matrix_table(result: MatrixResult) -> Table:
    table = Table(title=f"Benchmark matrix. {MEASURED_LABEL}; {MODELED_LABEL}", title_justify="left")
    for column in ("benchmark", "mode", "paging", "iters", "measured ns/it", "spread", "insns/it",
                   "exits/it", "callouts/it", "hcalls/it", "TLB fills/it", "walk refs/it",
                   "BT xlat/it", "modeled cycles/it", "status"):
        table.add_column(column, justify="left" if column in ("benchmark", "mode", "paging", "status")
                         else "right", overflow="fold")
    for cell in result.cells:
        table.add_row(*_row(result, cell))
    return table


def _row(result: MatrixResult, cell: CellResult) -> list[str]:
    c = cell.cell
    if not cell.ok:
        return [c.benchmark, c.mode, c.paging, str(cell.iterations), *["-"] * 10,
                f"failed: {cell.failure or 'no samples'}"]
    per = cell.per_iteration()
    events = events_per_iteration(per, cell.instructions_per_iteration)
    counts = ("-",) * 6 if c.baseline else (
        _num(events["vm_exit"] + events["hypercall"]), _num(events["bt_callout"]),
        _num(events["hypercall"]), _num(per.get("tlb_fills")), _num(events["page_walk_reference"]),
        _num(events["bt_translated_instruction"]))
    return [c.benchmark, c.mode, c.paging, str(cell.iterations), _num(cell.median_ns),
            f"{cell.spread:.0%}" if cell.spread is not None else "-",
            _num(cell.instructions_per_iteration), *counts, _num(result.modeled_cycles(cell)),
            "ok" if cell.instructions_note is None else f"ok ({cell.instructions_note})"]


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _paper_table(result: MatrixResult) -> Table:
    table = Table(title=f"Who wins, against {PAPER_CITATION} (bt = software VMM, vtx = hardware VMM)",
                  title_justify="left")
    for column in ("benchmark", "paging", "paper", "vtemu measured", "match", "vtemu modeled",
                   "match", "fastest of all modes", "note"):
        table.add_column(column, overflow="fold")
    for v in verdicts(result):
        table.add_row(v.benchmark, v.paging, v.paper, v.measured or "-", _yes_no(v.matches_measured),
                      v.modeled or "-", _yes_no(v.matches_modeled), v.fastest_overall or "-", v.note)
    return table


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def raw_ratio_lines(result: MatrixResult) -> list[str]:
    """Exit-free benchmarks: raw Unicorn time / vtemu time (1.0 = as fast as bare Unicorn)."""
    lines = []
    for raw in (c for c in result.cells if c.cell.mode in (RAW_UNICORN, QEMU_TCG) and c.ok):
        for cell in result.cells:
            if (cell.cell.benchmark == raw.cell.benchmark and not cell.cell.baseline and cell.ok
                    and raw.median_ns and cell.median_ns):
                lines.append(f"{cell.cell.benchmark} {cell.cell.mode}/{cell.cell.paging}: "
                             f"{raw.cell.mode} time / vtemu time = {raw.median_ns / cell.median_ns:.3f} "
                             f"({raw.median_ns:,.0f} vs {cell.median_ns:,.0f} ns per iteration)")
    return lines


# --- JSON and CSV ---------------------------------------------------------------------------
def matrix_json(result: MatrixResult) -> dict[str, object]:
    config = result.config
    return {
        "labels": {"measured": MEASURED_LABEL, "modeled": MODELED_LABEL},
        "config": {"benchmarks": [b.name for b in config.benchmarks], "modes": list(config.modes),
                   "paging": list(config.pagings), "repeats": config.repeats, "warmup": config.warmup,
                   "count_iterations": config.count_iterations},
        "cost_model": {"origin": config.cost_model.origin, "parameters": config.cost_model.describe()},
        "host_seconds": round(result.host_seconds, 3),
        "cells": [_cell_json(result, cell) for cell in result.cells],
        "paper": [{"benchmark": v.benchmark, "paging": v.paging, "paper_winner": v.paper,
                   "paper_finding": PAPER[v.benchmark].finding,
                   "paper_cycles": {"bt": PAPER[v.benchmark].bt_cycles, "vtx": PAPER[v.benchmark].vtx_cycles,
                                    "native": PAPER[v.benchmark].native_cycles},
                   "measured_winner": v.measured,
                   "modeled_winner": v.modeled, "matches_measured": v.matches_measured,
                   "matches_modeled": v.matches_modeled, "fastest_overall": v.fastest_overall,
                   "note": v.note} for v in verdicts(result)],
        "raw_ratios": raw_ratio_lines(result),
        "samples": [_sample_row(cell, sample) for cell in result.cells for sample in cell.samples],
    }


def _cell_json(result: MatrixResult, cell: CellResult) -> dict[str, object]:
    per = cell.per_iteration() if cell.samples else {}
    events = events_per_iteration(per, cell.instructions_per_iteration)
    modeled = result.modeled_cycles(cell)
    return {
        "benchmark": cell.cell.benchmark, "mode": cell.cell.mode, "paging": cell.cell.paging,
        "status": "ok" if cell.ok else "failed", "failure": cell.failure,
        "iterations": cell.iterations,
        "measured_ns_per_iteration": {
            "median": cell.median_ns, "min": min(cell.timed) if cell.timed else None,
            "max": max(cell.timed) if cell.timed else None,
            "stdev": statistics.stdev(cell.timed) if len(cell.timed) > 1 else None,
            "spread": cell.spread, "samples": cell.timed},
        "guest_instructions_per_iteration": cell.instructions_per_iteration,
        "instructions_note": cell.instructions_note,
        "per_iteration": per,
        "model_events_per_iteration": None if cell.cell.baseline else events,
        "modeled_cycles_per_iteration": modeled,
        "modeled_breakdown": None if modeled is None else result.config.cost_model.breakdown(events),
    }


def _sample_row(cell: CellResult, sample) -> dict[str, object]:
    return {"benchmark": cell.cell.benchmark, "mode": cell.cell.mode, "paging": cell.cell.paging,
            "round": sample.round, "warmup": sample.warmup, "iterations": sample.iterations,
            "wall_ns": sample.wall_ns, "ns_per_iteration": sample.ns_per_iteration,
            "counters": sample.counters}


def write_csv(result: MatrixResult, stream: TextIO) -> None:
    """One row per raw sample (warm-ups included, marked), and one per failed cell."""
    writer = csv.writer(stream)
    writer.writerow(CSV_COLUMNS)
    for cell in result.cells:
        c = cell.cell
        for s in cell.samples:
            counters = s.counters
            writer.writerow([c.benchmark, c.mode, c.paging, s.round, int(s.warmup), s.iterations,
                             s.wall_ns, f"{s.ns_per_iteration:.3f}",
                             *(_int(counters.get(k)) for k in ("exits", "callouts", "hypercalls",
                                                                "tlb_fills", "paging:walk_references")),
                             "ok", ""])
        if cell.failure is not None:
            writer.writerow([c.benchmark, c.mode, c.paging, "", "", cell.iterations, "", "",
                             "", "", "", "", "", "failed", cell.failure])


def _cycles(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _modeled_pair(result: MatrixResult, benchmark: str, paging: str) -> str:
    pair = []
    for mode in ("bt", "vtx"):
        cell = result.cell(benchmark, mode, paging)
        cycles = result.modeled_cycles(cell) if cell is not None else None
        pair.append(_num(cycles))
    return " / ".join(pair)


def _int(value: float | None) -> str:
    return "" if value is None else str(int(value))


# --- markdown -------------------------------------------------------------------------------
def markdown_summary(result: MatrixResult) -> str:
    lines = ["# vtemu benchmark summary", "",
             f"- **Measured** = {MEASURED_LABEL}.",
             f"- **Modeled** = {MODELED_LABEL}; cost model: {result.config.cost_model.origin}.",
             f"- Reference: {PAPER_CITATION}. The paper's hardware VMM used shadow paging "
             "(no EPT in 2006): the `shadow` rows are the comparable ones.", "",
             "## Who wins each of the paper's nanobenchmarks", "",
             "Paper cycles (bt / vtx / native) are the paper's own figures on a Pentium 4; vtemu's "
             "modeled cycles (bt / vtx) are this run's counted events priced by the cost model.", "",
             "| benchmark | paging | paper winner | paper cycles bt / vtx / native | vtemu measured winner "
             "| matches | vtemu modeled winner | matches | vtemu modeled bt / vtx | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for v in verdicts(result):
        paper = PAPER[v.benchmark]
        lines.append(f"| {v.benchmark} | {v.paging} | {v.paper} | "
                     f"{_cycles(paper.bt_cycles)} / {_cycles(paper.vtx_cycles)} / {_cycles(paper.native_cycles)} | "
                     f"{v.measured or '-'} | {_yes_no(v.matches_measured)} | {v.modeled or '-'} | "
                     f"{_yes_no(v.matches_modeled)} | {_modeled_pair(result, v.benchmark, v.paging)} | "
                     f"{v.note or paper.finding} |")
    lines += ["", "## Every cell", "",
              "| benchmark | mode | paging | measured ns/iter | spread | guest insns/iter | exits/iter | "
              "modeled cycles/iter | status |", "|---|---|---|---|---|---|---|---|---|"]
    for cell in result.cells:
        row = _row(result, cell)
        picked = [row[i] for i in (0, 1, 2, 4, 5, 6, 7, 13, 14)]
        lines.append(f"| {' | '.join(picked)} |")
    ratios = raw_ratio_lines(result)
    if ratios:
        lines += ["", "## Baselines (same run)", ""] + [f"- {line}" for line in ratios]
    return "\n".join(lines) + "\n"
