"""`vtemu bench` on tiny iteration counts: every cell of the requested matrix in the JSON and
the CSV (every raw sample), valid PNGs, the markdown comparison, and a mode that cannot run
is a failed cell with its reason, not a crash. No wall-clock assertions."""

from __future__ import annotations

import csv
import json

import pytest

from vtemu.bench import baselines, catalog
from vtemu.bench.matrix import NO_PAGING, QEMU_TCG, RAW_UNICORN, Cell, CellResult, MatrixConfig
from vtemu.bench.paper import PAPER, verdicts
from vtemu.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BENCHMARKS = ["cpuid", "callret", "boot"]


def _expected_cells(modes: list[str], pagings: list[str]) -> set[tuple[str, str, str]]:
    cells = {(b, m, p) for b in BENCHMARKS for m in modes for p in pagings}
    cells.add(("callret", RAW_UNICORN, NO_PAGING))
    if baselines.qemu_available():
        cells.add(("boot", QEMU_TCG, NO_PAGING))
    return cells


def test_the_matrix_writes_every_cell_and_every_sample(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["bench", "--benchmarks", ",".join(BENCHMARKS), "--modes", "vtx", "--paging", "ept,shadow",
            "--iterations", "3", "--repeat", "2", "--warmup", "1",
            "--json", str(out / "m.json"), "--csv", str(out / "m.csv"),
            "--plot", str(out / "m.png"), "--markdown", str(out / "m.md")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "measured: host wall time" in printed and "modeled: cycles" in printed

    data = json.loads((out / "m.json").read_text())
    cells = {(c["benchmark"], c["mode"], c["paging"]): c for c in data["cells"]}
    assert set(cells) == _expected_cells(["vtx"], ["ept", "shadow"])
    for key, cell in cells.items():
        assert cell["status"] == "ok", (key, cell["failure"])
        assert len(cell["measured_ns_per_iteration"]["samples"]) == 2      # warm-up excluded
    cpuid = cells["cpuid", "vtx", "ept"]
    assert cpuid["per_iteration"]["exit:CPUID"] == 1.0
    assert cpuid["guest_instructions_per_iteration"] == 5.0
    assert cpuid["modeled_cycles_per_iteration"] == sum(cpuid["modeled_breakdown"].values())
    assert len(data["samples"]) == 3 * len(cells)                           # 1 warm-up + 2

    with (out / "m.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 3 * len(cells)
    assert sum(row["warmup"] == "1" for row in rows) == len(cells)
    assert {(r["benchmark"], r["mode"], r["paging"]) for r in rows} == set(cells)
    assert all(int(r["iterations"]) in (1, 3) and int(r["wall_ns"]) > 0 for r in rows)

    for png in (out / "m.png", out / "m.modeled.png"):
        assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert "| benchmark | paging | paper winner |" in (out / "m.md").read_text()


def test_a_mode_that_cannot_run_is_a_failed_cell_with_its_reason(tmp_path, monkeypatch) -> None:
    from vtemu import modes

    def refuse(cpu, partition):
        raise RuntimeError("this mode refuses\nevery guest")
    monkeypatch.setitem(modes.MODES, "broken", refuse)
    out = tmp_path / "m.json"
    assert main(["bench", "--benchmarks", "cpuid", "--modes", "vtx,broken", "--paging", "ept",
                 "--iterations", "2", "--repeat", "1", "--warmup", "0", "--no-baselines",
                 "--json", str(out)]) == 0
    cells = {c["mode"]: c for c in json.loads(out.read_text())["cells"]}
    assert cells["vtx"]["status"] == "ok"
    assert cells["broken"]["status"] == "failed"
    assert cells["broken"]["failure"] == "RuntimeError: this mode refuses"


@pytest.mark.parametrize("argv, message", [
    (["--modes", "vtx,nope"], "--modes: unknown mode 'nope'"),
    (["--paging", "nested"], "--paging: unknown paging scheme 'nested'"),
    (["--benchmarks", "cpuid,fork"], "--benchmarks: unknown benchmark 'fork'"),
    (["--suite", "everything"], "--suite: unknown suite 'everything'"),
    (["--quick", "--iterations", "3"], "--quick and --iterations"),
])
def test_bad_options_are_one_line_errors(capsys, argv: list[str], message: str) -> None:
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_list_names_every_benchmark(capsys) -> None:
    assert main(["bench", "--list"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in catalog.BENCHMARKS)


def test_the_raw_unicorn_baseline_runs_the_guest_loop_and_checks_it() -> None:
    loop = baselines.RawUnicornLoop(catalog.BENCHMARKS["compute"].source)
    assert loop.run(2).iterations == 2          # r13 = 2 and 2 x 1028 primes, or BaselineError



def test_the_paper_verdict_picks_the_faster_of_bt_and_vtx() -> None:
    from vtemu.bench.matrix import MatrixResult, Sample
    config = MatrixConfig([catalog.BENCHMARKS["in"]], ["vtx", "bt"], ["shadow"])
    cells = []
    for mode, ns, exits in (("vtx", 50.0, 1.0), ("bt", 80.0, 0.0)):
        cell = Cell("in", mode, "shadow")
        result = CellResult(cell, 10)
        result.samples.append(Sample(cell, 0, False, 10, int(ns * 10),
                                     {"exits": exits * 10, "callouts": (1 - exits) * 10}))
        result.instructions_per_iteration = 4.0
        cells.append(result)
    [verdict] = verdicts(MatrixResult(config, cells))
    assert verdict.paper == PAPER["in"].winner == "bt"
    assert verdict.measured == "vtx" and verdict.matches_measured is False
    assert verdict.modeled == "bt" and verdict.matches_modeled is True   # 150 vs 2000 cycles


def test_qemu_runs_the_same_image_with_the_count_on_its_command_line() -> None:
    if not baselines.qemu_available():
        pytest.skip("qemu-system-x86_64 is not on PATH")
    from vtemu.asm import build_guest
    image = build_guest(catalog.BENCHMARKS["compute"].source)
    _, text = baselines.qemu_run_ns(image, "iterations=3")
    assert text == "compute: 3 iterations\n"
    assert baselines.qemu_loop_sample(image, 2, whole_run=False).iterations == 2


def test_the_first_warm_up_calibrates_the_count_and_is_not_a_sample() -> None:
    from vtemu.bench.matrix import Matrix
    cpuid = catalog.BENCHMARKS["cpuid"]
    config = MatrixConfig([cpuid], ["vtx"], ["ept"], repeats=2, warmup=1, target_s=1e-9,
                          raw_unicorn=False, qemu=False)
    [result] = Matrix(config).run().cells
    warmup, *timed = result.samples
    assert warmup.warmup and warmup.iterations == cpuid.default_iterations // 100
    assert [s.iterations for s in timed] == [2, 2]       # a target of 1 ns: the minimum count
    assert result.iterations == 2 and len(result.timed) == 2
