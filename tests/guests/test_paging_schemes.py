"""The same guests under nested paging (EPT) and shadow page tables: identical serial output
and exit status, and the shadow MMU doing the work the literature says it does."""

from __future__ import annotations

import pytest

from tests.guests.harness import all_guests, run_guest
from vtemu.vmx.reasons import ExitReason

NEEDS_A_DISK = {"disk"}


@pytest.fixture(scope="module")
def shadow_runs() -> dict:
    return {}


def _shadow(name: str, cache: dict):
    if name not in cache:
        cache[name] = run_guest(name, paging="shadow")
    return cache[name]


@pytest.mark.parametrize("name", [name for name in all_guests() if name not in NEEDS_A_DISK])
def test_same_output_and_exit_status_under_shadow_paging(name: str, boot, shadow_runs) -> None:
    ept, shadow = boot(name), _shadow(name, shadow_runs)
    assert shadow.serial == ept.serial
    assert (shadow.exit_code, shadow.reason) == (ept.exit_code, ept.reason)


def test_nested_paging_takes_no_paging_exits(boot) -> None:
    reasons = {record.reason for record in boot("ptemod").exits}
    assert not reasons & {ExitReason.EXCEPTION_OR_NMI, ExitReason.INVLPG, ExitReason.CR_ACCESS}
    counters = boot("ptemod").partition.paging.counter_values()
    assert 20 < counters["walk_references"] / counters["walks"] <= 24      # 2-D walks: n*m + n + m


def test_shadow_pays_exits_on_page_table_writes_invlpg_and_cr3_loads(shadow_runs) -> None:
    counters = _shadow("ptemod", shadow_runs).partition.paging.counter_values()
    assert counters["table_writes"] > 0 and counters["invlpg_exits"] > 0
    assert counters["true_faults"] > 0 and counters["hidden_faults"] > 0
    assert counters["walk_references"] / counters["walks"] < 5            # 1-D walks of 4 levels
    cr3 = _shadow("cr3switch", shadow_runs).partition.paging.counter_values()
    assert cr3["shadow_cr3_loads"] > 1000 and cr3["shadow_root_hits"] >= cr3["shadow_cr3_loads"] - 10


def test_demand_paging_faults_are_true_faults_and_fills_are_hidden(shadow_runs) -> None:
    counters = _shadow("pgfault", shadow_runs).partition.paging.counter_values()
    assert counters["true_faults"] == 4096                 # the guest's own demand faults
    assert counters["hidden_faults"] >= 4096               # each page then filled unseen
    assert counters["table_writes"] == counters["table_writes_emulated"] >= 4096


def test_exceptions_guest_steps_its_and_or_pte_writes_under_the_monitor_trap_flag(shadow_runs) -> None:
    run = _shadow("exceptions", shadow_runs)
    counters = run.partition.paging.counter_values()
    assert counters["table_writes"] > counters["table_writes_emulated"]
    assert ExitReason.MONITOR_TRAP_FLAG in {record.reason for record in run.exits}
