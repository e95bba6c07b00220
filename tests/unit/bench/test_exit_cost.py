"""The exit-cost benchmark measures what it says: the loops it times really exit once per
iteration (or never), counted by the hypervisor. No wall-clock assertions."""

from __future__ import annotations

import json

from vtemu.bench.exit_cost import exit_free_throughput, exit_round_trips
from vtemu.cli import main


def test_each_exit_loop_exits_once_per_iteration() -> None:
    measurements = exit_round_trips(iterations=40, repeats=1)
    assert [m.name for m in measurements] == ["out", "cpuid", "vmcall"]
    assert [m.exits_per_iteration for m in measurements] == [1.0, 1.0, 1.0]
    assert all(len(m.samples) == 1 for m in measurements)


def test_the_exit_free_loop_never_exits_and_is_compared_with_raw_unicorn() -> None:
    result = exit_free_throughput(iterations=5000, repeats=1)
    assert result["exits_in_loop"] == 0
    assert result["raw_unicorn_s"] > 0 and result["vtemu_s"] > 0 and result["vtemu_counted_s"] > 0
    assert result["ratio_vs_raw"] == result["raw_unicorn_s"] / result["vtemu_s"]


def test_vtemu_bench_prints_the_tables_and_writes_json(capsys, tmp_path, monkeypatch) -> None:
    import vtemu.bench.exit_cost as exit_cost
    monkeypatch.setattr(exit_cost, "measure",
                        lambda quick, repeats: exit_cost.ExitCostReport(
                            exit_round_trips(30, 1), exit_free_throughput(2000, 1)))
    out_file = tmp_path / "out" / "cost.json"
    assert main(["bench", "--suite", "exit-cost", "--quick", "--json", str(out_file)]) == 0
    printed = capsys.readouterr().out
    assert "VM exit round trip" in printed and "raw Unicorn" in printed
    data = json.loads(out_file.read_text())
    assert [row["loop"] for row in data["round_trips"]] == ["out", "cpuid", "vmcall"]
    assert data["exit_free"]["exits_in_loop"] == 0
