"""benchmarks/spinlock.py's measurement: every configuration ends with the exact count, and
the guest-counted waste orders as the issue says (wall time is reported, never asserted)."""

from __future__ import annotations

from vtemu.bench.spinlock import CURES, VCPU_COUNTS, format_table, measure


def test_one_pass_measures_every_configuration() -> None:
    runs = measure(repeats=1)
    assert [(run.vcpus, run.cure) for run in runs] == [(n, cure) for n in VCPU_COUNTS for cure in CURES]
    assert all(run.exit_code == 0 and len(run.wall_seconds) == 1 for run in runs)
    waste = {(run.vcpus, run.cure): run.spin_iterations for run in runs}
    assert waste[4, "ple"] < waste[4, "none"] and waste[4, "enlightened"] < waste[4, "none"]
    by_cure = {run.cure: run for run in runs if run.vcpus == 4}
    assert "pause-loop" in by_cure["ple"].yields and "long-spin" in by_cure["enlightened"].yields
    table = format_table(runs)
    assert len(table.splitlines()) == 2 + len(runs)
