"""`vtemu run --stats`: the table with breakdowns, JSON, and CSV written to a file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from vtemu.cli import main
from vtemu.hv.outcome import RunEnd

GUESTS = Path(__file__).resolve().parents[2] / "guests"
TICK = str(GUESTS / "tick.S")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_stats_csv_goes_to_the_file(capsys, tmp_path) -> None:
    path = tmp_path / "stats.csv"
    code, out, err = _run(capsys, "run", TICK, "--stats", "--csv", str(path))
    assert code == 0 and out.endswith("50 ticks\n") and err == ""
    rows = list(csv.DictReader(path.open()))
    totals = {r["reason"]: int(r["count"]) for r in rows if r["vcpu"] == "all" and not r["kind"]}
    assert totals["EXTERNAL_INTERRUPT"] == 50 and totals["HLT"] == 50
    ports = {(r["key"], r["access"]): int(r["count"]) for r in rows
             if r["vcpu"] == "all" and r["kind"] == "port"}
    assert ports[("0x20", "out")] == 51                   # 50 EOIs and the PIC set-up
    vectors = [r for r in rows if r["kind"] == "vector"]
    assert {(r["vcpu"], r["key"], r["count"]) for r in vectors} == {("all", "0x20", "50"), ("0", "0x20", "50")}
    assert sum(int(r["count"]) for r in rows if r["vcpu"] == "all" and not r["kind"]) == \
        sum(int(r["count"]) for r in rows if r["vcpu"] == "0" and not r["kind"])


def test_stats_json_has_breakdowns_and_vcpus(capsys) -> None:
    code, _, err = _run(capsys, "run", TICK, "--stats", "--json")
    [partition] = json.loads(err)
    rows = {row["reason"]: row for row in partition["exits"]}
    assert rows["EXTERNAL_INTERRUPT"]["breakdown"][0]["label"] == "vector 0x20"
    assert rows["IO_INSTRUCTION"]["number"] == 30
    assert partition["vcpus"][0]["vcpu"] == 0
    assert sum(row["count"] for row in partition["exits"]) == partition["summary"]["exits"]


def test_stats_table_has_the_breakdown(capsys) -> None:
    code, _, err = _run(capsys, "run", TICK, "--stats")
    assert "VM exits by operand: tick" in err and "vector 0x20" in err and "out 0x3f8" in err


def test_unwritable_csv_is_one_line_before_the_guest_runs(capsys, tmp_path) -> None:
    code, out, err = _run(capsys, "run", TICK, "--stats", "--csv", str(tmp_path / "no" / "s.csv"))
    assert code == RunEnd.BAD_INPUT and out == ""
    assert len(err.strip().splitlines()) == 1 and "no such file" in err


def test_stats_show_the_memory_and_translation_counters(capsys) -> None:
    code, out, err = _run(capsys, "run", str(GUESTS / "ptemod.S"), "--paging", "shadow", "--stats")
    assert code == 0
    memory = next(line for line in err.splitlines() if line.startswith("memory (shadow):"))
    assert "hidden_faults" in memory and "shadow_root_hits" in err
    code, out, err = _run(capsys, "run", str(GUESTS / "hello.S"), "--mode", "bt", "--stats", "--json")
    assert code == 0
    counters = json.loads(err)[0]["counters"]
    assert counters["translation"]["blocks"] > 0 and counters["translation"]["tc_bytes"] > 0
    assert counters["callouts"]["IO_INSTRUCTION"] > 0 and "memory (ept)" in counters
