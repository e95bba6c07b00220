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


def print_paging(runs: list, stream: TextIO) -> None:
    """EPT against shadow paging per guest: time, exits and where each scheme pays."""
    console = Console(file=stream, highlight=False, width=None if stream.isatty() else 132)
    table = Table(title="Nested (EPT) vs shadow paging, measured in one run (walks: the processor's "
                        "TLB-miss walks plus the hypervisor's walks of guest tables)", title_justify="left")
    for column in ("guest", "paging", "median s", "exits", "#PF exits", "hidden", "true #PF",
                   "PT writes", "CR3 loads (hits)", "INVLPG", "TLB fills", "walks", "refs/walk"):
        table.add_column(column, justify="left" if column in ("guest", "paging") else "right")
    for run in runs:
        c = run.counters
        walks = c.get("walks", 0)
        table.add_row(run.guest, run.scheme, f"{run.median_s:.3f}", str(sum(run.exits.values())),
                      str(run.exits.get("EXCEPTION_OR_NMI", 0)), _count(c, "hidden_faults"),
                      _count(c, "true_faults"), _count(c, "table_writes"),
                      f"{c['shadow_cr3_loads']} ({c['shadow_root_hits']})" if "shadow_cr3_loads" in c else "-",
                      _count(c, "invlpg_exits"), str(c.get("tlb_fills", 0)), str(walks),
                      f"{c.get('walk_references', 0) / walks:.1f}" if walks else "-")
    console.print(table)


def _count(counters: dict, name: str) -> str:
    return str(counters[name]) if name in counters else "-"
