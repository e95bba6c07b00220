"""Benchmark results as tables for a terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from vtemu.bench.exit_cost import ExitCostReport

EXIT_GOAL_US = 1.0          # project goals (issue 2): ≤ 1 µs per exit, ≥ 0.95× raw Unicorn
THROUGHPUT_GOAL = 0.95


def print_exit_cost(report: "ExitCostReport", stream: TextIO) -> None:
    console = Console(file=stream, highlight=False, width=None if stream.isatty() else 100)
    exits = Table(title="VM exit round trip (guest loop, net of the loop itself)", title_justify="left")
    for column in ("loop", "median µs", "samples µs", "exits/iteration", f"goal ≤ {EXIT_GOAL_US:g} µs"):
        exits.add_column(column, justify="left" if column == "loop" else "right")
    for m in report.round_trips:
        exits.add_row(m.name, f"{m.median_us:.2f}", " ".join(f"{x:.2f}" for x in m.samples),
                      f"{m.exits_per_iteration:.2f}", "met" if m.median_us <= EXIT_GOAL_US else "not met")
    console.print(exits)
    t = report.throughput
    free = Table(title=f"Exit-free loop ({t['iterations']:,} iterations, 6 instructions each)",
                 title_justify="left")
    for column in ("run", "ns/instruction", "× raw Unicorn", f"goal ≥ {THROUGHPUT_GOAL:g}×"):
        free.add_column(column, justify="left" if column == "run" else "right")
    free.add_row("raw Unicorn (no hooks, no VMM)", f"{t['raw_ns_per_insn']:.2f}", "1.000", "")
    free.add_row("vtemu, guest time not observed", f"{t['vtemu_ns_per_insn']:.2f}",
                 f"{t['ratio_vs_raw']:.3f}", "met" if t["ratio_vs_raw"] >= THROUGHPUT_GOAL else "not met")
    free.add_row("vtemu, guest time live (counted)", f"{t['vtemu_counted_ns_per_insn']:.2f}",
                 f"{t['counted_ratio_vs_raw']:.3f}", "")
    console.print(free)
    console.print(f"VM exits inside the exit-free loop: {t['exits_in_loop']}")
