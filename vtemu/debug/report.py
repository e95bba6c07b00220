"""Exit statistics as a table (perf kvm stat's shape) or JSON."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition


def stats_rows(partition: "Partition") -> list[dict[str, object]]:
    merged = partition.stats.merged()
    total = sum(stats.count for stats in merged.values()) or 1
    rows = []
    for reason, stats in sorted(merged.items(), key=lambda item: -item[1].count):
        rows.append({
            "reason": reason, "number": partition.stats.reason_numbers[reason],
            "count": stats.count, "percent": round(100.0 * stats.count / total, 2),
            "total_us": round(stats.total_ns / 1000, 1), "min_us": round(stats.min_ns / 1000, 2),
            "mean_us": round(stats.mean_ns / 1000, 2), "max_us": round(stats.max_ns / 1000, 2),
            "top": dict(stats.breakdown.most_common(5)),
        })
    return rows


def summary(partition: "Partition", wall_s: float) -> dict[str, object]:
    instructions = sum(cpu.vcpu.instructions_retired for cpu in partition.vcpus)
    return {
        "partition": partition.name, "exits": partition.stats.total,
        "guest_instructions_counted": instructions, "guest_time_ns": partition.clock.peek_ns(),
        "wall_seconds": round(wall_s, 4), "tlb_fills": sum(cpu.vcpu.tlb_fills for cpu in partition.vcpus),
        "ept_walk_references": partition.translator.nested.references,
        "exit_reason": partition.result.reason if partition.result else None,
    }


def print_stats(partition: "Partition", wall_s: float, stream: TextIO) -> None:
    console = Console(file=stream, highlight=False, soft_wrap=False,
                      width=None if stream.isatty() else 132)
    table = Table(title=f"VM exits: {partition.name}", title_justify="left")
    for column in ("reason", "#", "count", "%", "total µs", "min µs", "avg µs", "max µs", "top"):
        table.add_column(column, justify="left" if column in ("reason", "top") else "right")
    for row in stats_rows(partition):
        top = ", ".join(f"{key} ×{value}" for key, value in row["top"].items())  # type: ignore[attr-defined]
        table.add_row(str(row["reason"]), str(row["number"]), str(row["count"]), f"{row['percent']:.1f}",
                      f"{row['total_us']:.0f}", f"{row['min_us']:.1f}", f"{row['mean_us']:.1f}",
                      f"{row['max_us']:.1f}", top)
    console.print(table)
    info = summary(partition, wall_s)
    console.print(f"{info['exits']} exits, {info['guest_instructions_counted']} guest instructions counted, "
                  f"{info['tlb_fills']} TLB fills, {info['ept_walk_references']} EPT-walk references, "
                  f"{info['wall_seconds']} s")


def stats_json(partitions: list["Partition"], wall_s: float) -> str:
    return json.dumps([{"summary": summary(p, wall_s), "exits": stats_rows(p)} for p in partitions],
                      indent=2)
