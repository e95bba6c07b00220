"""Every guest under binary translation (--mode bt) as under VT-x (--mode vtx), with both
paging schemes: the same serial output and the same ending, and the translator visibly at work
(kernel code ran from the translation cache, sensitive instructions became callouts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guests.harness import GUEST_DISK_SECTORS, all_guests, make_disk_image, run_guest


def _run(name: str, mode: str, paging: str, tmp_path: Path):
    disk = None
    if name in GUEST_DISK_SECTORS:
        disk = make_disk_image(tmp_path / f"{name}-{mode}.img", GUEST_DISK_SECTORS[name])
    return run_guest(name, mode=mode, paging=paging, disk=disk)


def _translator(run):
    return run.partition.vcpus[0].mode_engine


@pytest.mark.parametrize("paging", ["ept", pytest.param("shadow", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", all_guests())
def test_same_output_and_ending_under_binary_translation(name: str, paging: str, boot,
                                                         tmp_path: Path) -> None:
    vtx = boot(name) if paging == "ept" and name not in GUEST_DISK_SECTORS else \
        _run(name, "vtx", paging, tmp_path)
    bt = _run(name, "bt", paging, tmp_path)
    assert bt.serial == vtx.serial
    assert (bt.exit_code, bt.reason) == (vtx.exit_code, vtx.reason)
    counters = _translator(bt).counters
    assert counters.blocks > 0 and counters.instructions_translated > 0


def test_kernel_io_runs_as_callouts_not_vm_exits(boot) -> None:
    bt = run_guest("hello", mode="bt")
    counters = _translator(bt).counters
    # hello's kernel writes every byte of its greeting with OUT from the TC: callouts.
    assert counters.callouts["instruction"] >= len(b"Hello from a vtemu guest!")
    assert bt.partition.callout_stats.total > bt.partition.stats.total
    assert counters.superblocks > 0 and counters.chained > 0


def test_code_on_a_written_page_is_retranslated_not_stale(boot) -> None:
    """tick's interrupt handler increments a counter on the page that holds its own code:
    every write retires the translations from that page, and the next entry translates anew."""
    bt = run_guest("tick", mode="bt")
    assert bt.serial == boot("tick").serial
    counters = _translator(bt).counters
    assert counters.invalidations >= 50 and counters.callouts["stale"] > 0
