"""Exit statistics: per vCPU and merged, breakdowns fed by the collector, and the three outputs
(table, JSON, CSV) with the same numbers."""

from __future__ import annotations

import csv
import io as text_io
import json

from tests.unit.debug.helpers import PORT, io, rig_with_port, take
from vtemu.debug.breakdown import BreakdownCollector
from vtemu.debug.exitinfo import BreakdownKey
from vtemu.debug.report import CSV_COLUMNS, print_stats, stats_dict, stats_json, write_stats_csv
from vtemu.hv.stats import ExitStats, Timing
from vtemu.vmx.qualifications import IoDirection
from vtemu.vmx.reasons import ExitReason

CPUID, HLT = ExitReason.CPUID, ExitReason.HLT


def test_timing_min_avg_max() -> None:
    timing = Timing()
    assert (timing.minimum_ns, timing.mean_ns, timing.max_ns) == (0, 0.0, 0)
    for ns in (30, 10, 20):
        timing.add(ns)
    assert (timing.count, timing.total_ns, timing.minimum_ns, timing.mean_ns, timing.max_ns) == (3, 60, 10, 20.0, 30)


def test_per_vcpu_and_merged() -> None:
    stats = ExitStats()
    stats.record(0, CPUID, 100)
    stats.record(1, CPUID, 300)
    stats.record(1, HLT, 50)
    stats.record_breakdown(0, CPUID, [BreakdownKey("leaf", 1)], 100)
    stats.record_breakdown(1, CPUID, [BreakdownKey("leaf", 1)], 300)
    merged = stats.merged()
    assert (merged[CPUID].count, merged[CPUID].min_ns, merged[CPUID].max_ns) == (2, 100, 300)
    assert merged[CPUID].breakdown[BreakdownKey("leaf", 1)].count == 2
    assert stats.vcpus() == [0, 1]
    assert set(stats.for_vcpu(1)) == {CPUID, HLT} and stats.for_vcpu(0)[CPUID].count == 1
    assert stats.by_reason[0, CPUID].count == 1          # merging copied, did not add in place
    assert stats.total == 3 and stats.counts() == {"CPUID": 2, "HLT": 1}


def _collected_rig():
    rig, _ = rig_with_port(reads=[1, 2])
    BreakdownCollector(rig.partition)
    io(rig, IoDirection.OUT, rax=1)
    io(rig, IoDirection.OUT, rax=2)
    io(rig, IoDirection.IN)
    take(rig, CPUID, "cpuid", rax=0x40000001)
    return rig


def test_the_collector_counts_each_exit_under_its_key_with_its_time() -> None:
    rig = _collected_rig()
    merged = rig.partition.stats.merged()
    io_stats = merged[ExitReason.IO_INSTRUCTION]
    assert {key: t.count for key, t in io_stats.breakdown.items()} == {
        BreakdownKey("port", PORT, "out"): 2, BreakdownKey("port", PORT, "in"): 1}
    assert sum(t.total_ns for t in io_stats.breakdown.values()) == io_stats.total_ns
    assert set(merged[CPUID].breakdown) == {BreakdownKey("leaf", 0x40000001)}


def test_json_rows_carry_counts_percent_times_and_breakdowns_per_vcpu() -> None:
    rig = _collected_rig()
    data = json.loads(stats_json([rig.partition], 0.5))
    [partition] = data
    rows = {row["reason"]: row for row in partition["exits"]}
    io_row = rows["IO_INSTRUCTION"]
    assert (io_row["number"], io_row["count"], io_row["percent"]) == (30, 3, 75.0)
    assert io_row["min_ns"] <= io_row["avg_ns"] <= io_row["max_ns"] and io_row["total_ns"] > 0
    assert io_row["breakdown"][0] | {"count": 0} == {
        "kind": "port", "value": PORT, "access": "out", "label": "out 0x500", "count": 0,
        "percent": 50.0, "total_ns": io_row["breakdown"][0]["total_ns"],
        "min_ns": io_row["breakdown"][0]["min_ns"], "avg_ns": io_row["breakdown"][0]["avg_ns"],
        "max_ns": io_row["breakdown"][0]["max_ns"]}
    assert partition["vcpus"][0]["vcpu"] == 0 and partition["vcpus"][0]["exits"] == partition["exits"]
    assert partition["summary"]["exits"] == 4
    assert stats_dict(rig.partition, 0.5)["exits"] == partition["exits"]


def test_csv_has_reason_rows_and_breakdown_rows_for_the_partition_and_each_vcpu() -> None:
    rig = _collected_rig()
    out = text_io.StringIO()
    write_stats_csv([rig.partition], out)
    rows = list(csv.DictReader(text_io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == CSV_COLUMNS
    merged = [r for r in rows if r["vcpu"] == "all"]
    assert [(r["reason"], r["kind"], r["key"], r["access"], r["count"]) for r in merged] == [
        ("IO_INSTRUCTION", "", "", "", "3"),
        ("IO_INSTRUCTION", "port", "0x500", "out", "2"),
        ("IO_INSTRUCTION", "port", "0x500", "in", "1"),
        ("CPUID", "", "", "", "1"),
        ("CPUID", "leaf", "0x40000001", "", "1"),
    ]
    per_vcpu = [r for r in rows if r["vcpu"] == "0"]
    assert [(r["reason"], r["key"], r["count"]) for r in per_vcpu] == [
        (r["reason"], r["key"], r["count"]) for r in merged]
    assert all(int(r["min_ns"]) <= int(r["avg_ns"]) <= int(r["max_ns"]) for r in rows)
    assert {r["partition"] for r in rows} == {rig.partition.name}


def test_table_shows_reasons_and_the_breakdown() -> None:
    rig = _collected_rig()
    out = text_io.StringIO()
    print_stats(rig.partition, 0.5, out)
    text = out.getvalue()
    assert "IO_INSTRUCTION" in text and "out 0x500 ×2" in text
    assert "VM exits by operand" in text and "leaf 0x40000001" in text
    assert "4 exits" in text
