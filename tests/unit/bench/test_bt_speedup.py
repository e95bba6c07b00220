"""The bt-vs-vtx suite measures per-iteration costs by differencing two iteration counts;
its exit counts per iteration are exact (wall times are only reported, never asserted)."""

from __future__ import annotations

import pytest

from vtemu.bench import bt_speedup


@pytest.mark.slow
def test_sensitiveloop_exits_twice_per_iteration_under_vtx_and_never_under_bt() -> None:
    results = {r.loop: r for r in bt_speedup.measure(quick=True, repeats=1)}
    loop = results["sensitiveloop"]
    assert loop.exits_per_iteration == {"vtx": 2.0, "bt": 0.0}
    assert results["compute"].exits_per_iteration == {"vtx": 0.0, "bt": 0.0}
    assert loop.translation["blocks"] > 0 and loop.translation["tc_bytes"] > 0
    assert set(loop.as_dict()) >= {"ns_per_iteration", "bt_speedup_over_vtx", "translation"}
