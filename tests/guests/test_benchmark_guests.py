"""Every benchmark guest (benchmarks/*.S) does the iterations it is asked for and says so on
the bench port and on COM1, under each paging scheme, under binary translation and in its
enlightened (pv) build; the
probe's window holds exactly the loop's events. Correctness before speed: no timings here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vtemu.bench.catalog import BENCHMARKS
from vtemu.bench.matrix import Matrix, MatrixConfig, RunFailed

ASKED = 7


@pytest.fixture(scope="module")
def matrix() -> Iterator[Matrix]:
    harness = Matrix(MatrixConfig(list(BENCHMARKS.values()), ["vtx"], ["ept"]))
    yield harness
    harness.close()


def _expected_count(name: str, asked: int) -> int:
    return 1 if BENCHMARKS[name].whole_run else asked


@pytest.mark.parametrize("mode, paging", [("vtx", "ept"), ("vtx", "shadow"), ("pv", "ept"), ("bt", "ept")])
@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_the_guest_reports_the_count_it_was_asked_for(matrix: Matrix, name: str, mode: str,
                                                      paging: str) -> None:
    run = matrix.run_guest(BENCHMARKS[name], mode, paging, ASKED)
    count = _expected_count(name, ASKED)
    assert run.iterations == count
    assert f"{name}: {count} iterations\n".encode() in run.serial


def test_a_different_count_gives_a_different_report(matrix: Matrix) -> None:
    assert matrix.run_guest(BENCHMARKS["cpuid"], "vtx", "ept", 12).iterations == 12


def test_the_window_holds_exactly_the_loop(matrix: Matrix) -> None:
    """cpuid: one CPUID exit per iteration and nothing else, not even the marks."""
    counters = matrix.run_guest(BENCHMARKS["cpuid"], "vtx", "ept", 9).counters
    assert counters["exit:CPUID"] == 9
    assert counters["exits"] == 9


def test_counted_runs_give_exact_instructions_per_iteration(matrix: Matrix) -> None:
    """xor eax, eax; cpuid; inc r13d; cmp r13d, r12d; jb: five instructions per iteration."""
    single = matrix.run_guest(BENCHMARKS["cpuid"], "vtx", "ept", 2, count=True).counters
    double = matrix.run_guest(BENCHMARKS["cpuid"], "vtx", "ept", 4, count=True).counters
    assert (double["instructions"] - single["instructions"]) / 2 == 5


def test_the_exception_guests_count_their_handlers(matrix: Matrix) -> None:
    vmcall = matrix.run_guest(BENCHMARKS["vmcall"], "vtx", "ept", ASKED)
    assert f"vmcall: #UD taken {ASKED}\n".encode() in vmcall.serial      # no hypercall interface
    assert vmcall.counters["exit:VMCALL"] == ASKED
    enlightened = matrix.run_guest(BENCHMARKS["vmcall"], "pv", "ept", ASKED)
    assert b"vmcall: #UD taken 0\n" in enlightened.serial               # hypercalls instead
    assert enlightened.counters["hypercalls"] == ASKED
    once = matrix.run_guest(BENCHMARKS["pgfault"], "vtx", "shadow", ASKED).counters
    twice = matrix.run_guest(BENCHMARKS["pgfault"], "vtx", "shadow", 2 * ASKED).counters
    # every #PF exits under shadow paging (plus hidden faults of the first touches, which the
    # difference of the two runs cancels)
    assert twice["exit:EXCEPTION_OR_NMI"] - once["exit:EXCEPTION_OR_NMI"] == ASKED
    assert matrix.run_guest(BENCHMARKS["pgfault"], "vtx", "ept", ASKED).counters["exits"] == 0


def test_disk_without_a_disk_fails_with_its_reason() -> None:
    harness = Matrix(MatrixConfig([BENCHMARKS["disk"]], ["vtx"], ["ept"]))
    try:
        harness._disks[64] = None   # type: ignore[assignment]  (no image: status FFh)
        with pytest.raises(RunFailed, match="guest exit code 2 .*disk: failed"):
            harness.run_guest(BENCHMARKS["disk"], "vtx", "ept", 3)
    finally:
        harness.close()
