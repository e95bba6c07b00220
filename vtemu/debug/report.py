"""Exit statistics as a table (perf kvm stat's shape), JSON or CSV.

Rows per exit reason (SDM name and number): count, % of exits, total/min/avg/max handling
time on the host clock, and the breakdown by port, MSR, CPUID leaf, CR, hypercall code,
vector or guest-physical page (vtemu.debug.exitinfo.BreakdownKey), for the partition and for
each vCPU. JSON and CSV carry times in ns; the table shows µs.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Hashable
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.table import Table

from vtemu.debug.exitinfo import BreakdownKey
from vtemu.hv.stats import ReasonStats, Timing
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition

TOP = 5                 # breakdown entries in the table's "top" column
TABLE_BREAKDOWN = 10    # breakdown rows per reason in the table's second part


def _timing(timing: Timing, total: int) -> dict[str, object]:
    return {"count": timing.count, "percent": round(100.0 * timing.count / (total or 1), 2),
            "total_ns": timing.total_ns, "min_ns": timing.minimum_ns,
            "avg_ns": round(timing.mean_ns), "max_ns": timing.max_ns}


def _key(key: Hashable) -> dict[str, object]:
    if isinstance(key, BreakdownKey):
        return {"kind": key.kind, "value": key.value, "access": key.access, "label": key.label()}
    return {"kind": "", "value": None, "access": "", "label": str(key)}


def _label(key: Hashable) -> str:
    return key.label() if isinstance(key, BreakdownKey) else str(key)


def _sorted(stats: dict[ExitReason, ReasonStats]) -> list[tuple[ExitReason, ReasonStats]]:
    return sorted(stats.items(), key=lambda item: (-item[1].count, int(item[0])))


def _breakdown(stats: ReasonStats) -> list[tuple[Hashable, Timing]]:
    return sorted(stats.breakdown.items(), key=lambda item: (-item[1].count, _label(item[0])))


def reason_rows(stats: dict[ExitReason, ReasonStats]) -> list[dict[str, object]]:
    """One dict per reason, most frequent first, each with its breakdown."""
    total = sum(s.count for s in stats.values())
    return [{"reason": reason.name, "number": int(reason), **_timing(s, total),
             "breakdown": [{**_key(key), **_timing(timing, total)} for key, timing in _breakdown(s)]}
            for reason, s in _sorted(stats)]


def stats_rows(partition: "Partition") -> list[dict[str, object]]:
    return reason_rows(partition.stats.merged())


def summary(partition: "Partition", wall_s: float) -> dict[str, object]:
    instructions = sum(cpu.vcpu.instructions_retired for cpu in partition.vcpus)
    return {
        "partition": partition.name, "exits": partition.stats.total,
        "guest_instructions_counted": instructions, "guest_time_ns": partition.clock.peek_ns(),
        "wall_seconds": round(wall_s, 4), "tlb_fills": sum(cpu.vcpu.tlb_fills for cpu in partition.vcpus),
        "ept_walk_references": partition.translator.nested.references,
        "exit_reason": partition.result.reason if partition.result else None,
    }


def counter_sections(partition: "Partition") -> dict[str, dict[str, object]]:
    """The mechanisms' own counters: memory virtualization (the paging scheme's: walks and
    their references, EPT violations, hidden/true faults, table writes, CR3 loads, root
    hits...), the CPU mode's engine (per vCPU, summed; binary translation: blocks,
    superblocks, TC bytes, chains, lookups, invalidations, callouts by kind; deprivileged:
    traps and emulations) and callouts into the hypervisor by reason."""
    sections: dict[str, dict[str, object]] = {
        f"memory ({partition.spec.paging})": dict(partition.paging.counter_values())}
    engines = [cpu.mode_engine for cpu in partition.vcpus
               if hasattr(cpu.mode_engine, "counter_values")]
    if engines:
        section = getattr(engines[0], "counter_section", "mode")
        sections[section] = _summed([engine.counter_values() for engine in engines])
    if partition.callout_stats.total:
        sections["callouts"] = {reason.name: s.count
                                for reason, s in _sorted(partition.callout_stats.merged())}
    return sections


def _summed(values: list[dict[str, object]]) -> dict[str, object]:
    total: dict[str, object] = {}
    for counters in values:
        for key, value in counters.items():
            if isinstance(value, dict):
                inner = total.setdefault(key, {})
                for name, count in value.items():
                    inner[name] = inner.get(name, 0) + count  # type: ignore[union-attr]
            elif isinstance(value, (int, float)):
                total[key] = total.get(key, 0) + value      # type: ignore[operator]
    if "superblocks" in total:
        blocks = total["superblocks"] or 0
        total["mean_superblock_length"] = round(total.get("superblock_instructions", 0) / blocks, 1) \
            if blocks else 0.0                                   # type: ignore[operator]
    return total


def _section_line(name: str, counters: dict[str, object]) -> str:
    def show(value: object) -> str:
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k} {v}" for k, v in value.items()) + "}"
        return str(value)
    return f"{name}: " + ", ".join(f"{key} {show(value)}" for key, value in counters.items())


# --- table ------------------------------------------------------------------------------------
def _table(title: str, stats: dict[ExitReason, ReasonStats]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("reason", "#", "count", "%", "total µs", "min µs", "avg µs", "max µs", "top"):
        table.add_column(column, justify="left" if column in ("reason", "top") else "right")
    total = sum(s.count for s in stats.values()) or 1
    for reason, s in _sorted(stats):
        top = ", ".join(f"{_label(key)} ×{timing.count}" for key, timing in _breakdown(s)[:TOP])
        table.add_row(reason.name, str(int(reason)), *_timing_cells(s, total), top)
    return table


def _timing_cells(timing: Timing, total: int) -> list[str]:
    return [str(timing.count), f"{100.0 * timing.count / total:.1f}", f"{timing.total_ns / 1000:.0f}",
            f"{timing.minimum_ns / 1000:.1f}", f"{timing.mean_ns / 1000:.1f}", f"{timing.max_ns / 1000:.1f}"]


def _breakdown_table(title: str, stats: dict[ExitReason, ReasonStats]) -> Table | None:
    if not any(s.breakdown for s in stats.values()):
        return None
    table = Table(title=title, title_justify="left")
    for column in ("reason", "key", "count", "%", "total µs", "min µs", "avg µs", "max µs"):
        table.add_column(column, justify="left" if column in ("reason", "key") else "right")
    total = sum(s.count for s in stats.values()) or 1
    for reason, s in _sorted(stats):
        entries = _breakdown(s)
        for index, (key, timing) in enumerate(entries[:TABLE_BREAKDOWN]):
            table.add_row(reason.name if index == 0 else "", _label(key), *_timing_cells(timing, total))
        if len(entries) > TABLE_BREAKDOWN:
            rest = Timing()
            for _, timing in entries[TABLE_BREAKDOWN:]:
                rest.merge(timing)
            table.add_row("", f"… {len(entries) - TABLE_BREAKDOWN} more", *_timing_cells(rest, total))
    return table


def print_stats(partition: "Partition", wall_s: float, stream: TextIO) -> None:
    console = Console(file=stream, highlight=False, soft_wrap=False,
                      width=None if stream.isatty() else 132)
    merged = partition.stats.merged()
    console.print(_table(f"VM exits: {partition.name}", merged))
    breakdown = _breakdown_table(f"VM exits by operand: {partition.name}", merged)
    if breakdown is not None:
        console.print(breakdown)
    vcpus = partition.stats.vcpus()
    if len(vcpus) > 1:
        for vcpu in vcpus:
            console.print(_table(f"VM exits: {partition.name} vCPU {vcpu}", partition.stats.for_vcpu(vcpu)))
    info = summary(partition, wall_s)
    console.print(f"{info['exits']} exits, {info['guest_instructions_counted']} guest instructions counted, "
                  f"{info['tlb_fills']} TLB fills, {info['ept_walk_references']} EPT-walk references, "
                  f"{info['wall_seconds']} s")
    for name, counters in counter_sections(partition).items():
        console.print(_section_line(name, counters))


# --- JSON and CSV -----------------------------------------------------------------------------
def stats_dict(partition: "Partition", wall_s: float) -> dict[str, object]:
    stats = partition.stats
    return {"summary": summary(partition, wall_s), "counters": counter_sections(partition),
            "exits": reason_rows(stats.merged()),
            "vcpus": [{"vcpu": vcpu, "exits": reason_rows(stats.for_vcpu(vcpu))} for vcpu in stats.vcpus()]}


def stats_json(partitions: list["Partition"], wall_s: float) -> str:
    return json.dumps([stats_dict(p, wall_s) for p in partitions], indent=2)


CSV_COLUMNS = ("partition", "vcpu", "reason", "number", "kind", "key", "access", "count", "percent",
               "total_ns", "min_ns", "avg_ns", "max_ns")


def write_stats_csv(partitions: list["Partition"], stream: TextIO) -> None:
    """One row per (partition, vCPU or "all", reason), each followed by its breakdown rows
    (kind/key/access filled in: e.g. port, 0x3f8, out). Percentages are of the exits in scope."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for partition in partitions:
        scopes: list[tuple[str, dict[ExitReason, ReasonStats]]] = [("all", partition.stats.merged())]
        scopes += [(str(vcpu), partition.stats.for_vcpu(vcpu)) for vcpu in partition.stats.vcpus()]
        for scope, stats in scopes:
            for row in reason_rows(stats):
                head = [partition.name, scope, row["reason"], row["number"]]
                writer.writerow([*head, "", "", "", *_csv_timing(row)])
                for entry in row["breakdown"]:  # type: ignore[attr-defined]
                    value = entry["value"]
                    key = (BreakdownKey(entry["kind"], value, entry["access"]).format_value()
                           if isinstance(value, int) else entry["label"])
                    writer.writerow([*head, entry["kind"], key, entry["access"], *_csv_timing(entry)])


def _csv_timing(row: dict[str, object]) -> list[object]:
    return [row["count"], row["percent"], row["total_ns"], row["min_ns"], row["avg_ns"], row["max_ns"]]
