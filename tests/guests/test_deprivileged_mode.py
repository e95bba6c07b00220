"""Every guest under classic ring compression (--mode deprivileged): the 32-bit kernels give
the same serial output and ending as under --mode vtx, with their kernel really running at
CPL 1 and trapping into the VMM; the kernels that switch to long mode end with the mode's
documented outcome (exit 71 and a one-line reason) instead of running unvirtualized."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.guests.harness import GUEST_DISK_SECTORS, PROJECT, all_guests, make_disk_image, run_guest
from vtemu.hv.outcome import RunEnd

LONG_MODE = {"adbits", "bigpages", "cr3switch", "exceptions", "ioperm", "longmode", "msr",
             "noncanonical", "pgfault", "physscan", "ptemod", "pvabi", "sensitiveloop",
             "translation", "user"}
OWN_TEST = {"sensitive"}                    # tests/guests/test_sensitive.py
THIRTY_TWO_BIT = [name for name in all_guests() if name not in LONG_MODE | OWN_TEST]


def _run(name: str, mode: str, tmp_path: Path):
    disk = None
    if name in GUEST_DISK_SECTORS:
        disk = make_disk_image(tmp_path / f"{name}-{mode}.img", GUEST_DISK_SECTORS[name])
    return run_guest(name, mode=mode, disk=disk)


@pytest.mark.parametrize("name", THIRTY_TWO_BIT)
def test_32bit_kernels_run_as_under_vtx(name: str, tmp_path: Path) -> None:
    vtx = _run(name, "vtx", tmp_path)
    deprivileged = _run(name, "deprivileged", tmp_path)
    assert deprivileged.serial == vtx.serial
    assert (deprivileged.exit_code, deprivileged.reason) == (vtx.exit_code, vtx.reason)
    engine = deprivileged.partition.vcpus[0].mode_engine
    assert engine.engaged and engine.counters.traps > 0


@pytest.mark.parametrize("name", sorted(LONG_MODE))
def test_long_mode_kernels_end_with_the_documented_outcome(name: str) -> None:
    run = run_guest(name, mode="deprivileged")
    assert run.exit_code == RunEnd.UNHANDLED_EXIT
    assert run.reason == ("deprivileged mode runs 32-bit protected-mode kernels: "
                          "the guest enabled long mode (EFER.LME)")


def test_tick_takes_its_timer_interrupts_through_the_virtual_if() -> None:
    """50 timer interrupts reach the guest's handler, each delivered by the VMM (the real IF
    stays 1) and each ended by an IRET the VMM emulates."""
    run = run_guest("tick", mode="deprivileged")
    engine = run.partition.vcpus[0].mode_engine
    assert engine.counters.interrupts >= 50
    assert engine.counters.emulated["iretd"] == engine.counters.interrupts
    assert engine.counters.emulated["hlt"] >= 50


def test_shadow_paging_is_refused_with_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "vtemu.cli", "run", str(PROJECT / "guests" / "hello.S"),
                             "--mode", "deprivileged", "--paging", "shadow"],
                            capture_output=True, text=True, cwd=PROJECT, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "vtemu: --mode deprivileged runs with --paging ept (memory stays nested)"]


def test_deprivileged_runs_are_deterministic() -> None:
    first = run_guest("tick", mode="deprivileged")
    second = run_guest("tick", mode="deprivileged")
    assert first.exit_signature() == second.exit_signature()
    assert first.partition.vcpus[0].mode_engine.counters == second.partition.vcpus[0].mode_engine.counters
