"""The measurement suites `vtemu bench --suite` runs: each returns its results as JSON-ready
data and prints its own tables."""

from __future__ import annotations

from typing import Callable, TextIO

from vtemu.bench import bt_speedup, disk_io, exit_cost, paging, spinlock
from vtemu.bench.report import print_exit_cost, print_paging


def exit_cost_suite(quick: bool, repeats: int | None, stream: TextIO) -> object:
    report = exit_cost.measure(quick=quick, repeats=repeats)
    print_exit_cost(report, stream)
    return report.as_dict()


def paging_suite(quick: bool, repeats: int | None, stream: TextIO) -> object:
    runs = paging.measure(paging.GUESTS[:2] if quick else paging.GUESTS, repeats or (1 if quick else 3))
    print_paging(runs, stream)
    return [run.as_dict() for run in runs]


def disk_io_suite(quick: bool, repeats: int | None, stream: TextIO) -> object:
    runs = disk_io.measure(repeats or (1 if quick else 3))
    print(disk_io.format_table(runs), file=stream)
    return [run.as_dict() for run in runs]


def bt_suite(quick: bool, repeats: int | None, stream: TextIO) -> object:
    results = bt_speedup.measure(quick=quick, repeats=repeats or (1 if quick else 3))
    bt_speedup.print_results(results, stream)
    return [result.as_dict() for result in results]


def spinlock_suite(quick: bool, repeats: int | None, stream: TextIO) -> object:
    runs = spinlock.measure(repeats or (1 if quick else 3))
    print(spinlock.format_table(runs), file=stream)
    return [run.as_dict() for run in runs]


SUITES: dict[str, Callable[[bool, int | None, TextIO], object]] = {
    "spinlock": spinlock_suite,
    "bt": bt_suite,
    "exit-cost": exit_cost_suite,
    "paging": paging_suite,
    "disk-io": disk_io_suite,
}
