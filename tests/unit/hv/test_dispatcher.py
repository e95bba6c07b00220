"""The partition's exit dispatcher: handler lookup by exit reason, the explicit error for an exit
nobody handles, per-reason statistics (with breakdowns when collected), observers, and
outcome -> decision."""

from __future__ import annotations

import pytest

from tests.unit.hv.fakes import Rig
from vtemu.hv.outcome import HALT, RESUME, RunEnd, Shutdown
from vtemu.vmx.exit import ExitDecision, VmExit
from vtemu.vmx.qualifications import IoDirection, IoQualification
from vtemu.vmx.reasons import ExitReason


@pytest.fixture
def rig() -> Rig:
    rig = Rig()
    rig.protected_mode()
    return rig


def test_an_exit_with_no_handler_shuts_down_with_unhandled_exit(rig: Rig) -> None:
    assert ExitReason.TASK_SWITCH not in rig.partition.handlers
    decision = rig.dispatch(VmExit(ExitReason.TASK_SWITCH, 0x10000))
    assert decision is ExitDecision.STOP
    result = rig.partition.result
    assert result is not None and result.exit_code == RunEnd.UNHANDLED_EXIT == 71
    assert "TASK_SWITCH" in result.reason and "9" in result.reason
    assert result.dump
    assert all(cpu.stopped for cpu in rig.partition.vcpus)


def test_removing_a_handler_makes_its_exit_unhandled(rig: Rig) -> None:
    del rig.partition.handlers[ExitReason.CPUID]
    rig.dispatch(rig.exit_for(ExitReason.CPUID, rig.place("cpuid")))
    assert rig.partition.result is not None
    assert rig.partition.result.exit_code == RunEnd.UNHANDLED_EXIT


def test_statistics_per_reason_and_vcpu(rig: Rig) -> None:
    insn = rig.place("cpuid")
    for leaf in (0, 1, 1):
        rig.set(rax=leaf)
        rig.dispatch(rig.exit_for(ExitReason.CPUID, insn))
    rig.set(rflags=0x2)
    rig.dispatch(rig.exit_for(ExitReason.HLT, rig.place("hlt")))
    merged = rig.partition.stats.merged()
    assert merged[ExitReason.CPUID].count == 3
    assert merged[ExitReason.HLT].count == 1
    assert not merged[ExitReason.CPUID].breakdown   # breakdowns only when asked for (--stats)
    assert rig.partition.stats.counts() == {"CPUID": 3, "HLT": 1}
    assert rig.partition.stats.total == 4
    assert rig.partition.stats.vcpus() == [0]
    stats = rig.partition.stats.by_reason[0, ExitReason.CPUID]
    assert 0 < stats.min_ns <= stats.mean_ns <= stats.max_ns


def test_breakdowns_by_leaf_when_collected(rig: Rig) -> None:
    from vtemu.debug.breakdown import BreakdownCollector
    from vtemu.debug.exitinfo import BreakdownKey
    BreakdownCollector(rig.partition)
    insn = rig.place("cpuid")
    for leaf in (0, 1, 1):
        rig.set(rax=leaf)
        rig.dispatch(rig.exit_for(ExitReason.CPUID, insn))
    breakdown = rig.partition.stats.merged()[ExitReason.CPUID].breakdown
    assert {key: timing.count for key, timing in breakdown.items()} == {
        BreakdownKey("leaf", 0): 1, BreakdownKey("leaf", 1): 2}


def test_observers_see_every_exit_with_its_outcome(rig: Rig) -> None:
    rig.set(rflags=0x2)
    rig.dispatch(rig.exit_for(ExitReason.CPUID, rig.place("cpuid")))
    rig.dispatch(rig.exit_for(ExitReason.HLT, rig.place("hlt")))
    assert [(exit.reason, outcome) for exit, outcome in rig.outcomes] == [
        (ExitReason.CPUID, RESUME), (ExitReason.HLT, HALT)]


def test_outcomes_become_processor_decisions(rig: Rig) -> None:
    rig.partition.handlers[ExitReason.PAUSE] = lambda exit, cpu, part: RESUME
    rig.partition.handlers[ExitReason.INVD] = lambda exit, cpu, part: HALT
    rig.partition.handlers[ExitReason.WBINVD] = lambda exit, cpu, part: Shutdown(7, "seven")
    assert rig.dispatch(VmExit(ExitReason.PAUSE, 0)) is ExitDecision.RESUME
    assert rig.dispatch(VmExit(ExitReason.INVD, 0)) is ExitDecision.HALT
    assert not rig.partition.ended
    assert rig.dispatch(VmExit(ExitReason.WBINVD, 0)) is ExitDecision.STOP
    assert rig.partition.result == Shutdown(7, "seven")


def test_a_write_to_isa_debug_exit_ends_the_partition_with_its_value(rig: Rig) -> None:
    insn = rig.place("out dx, eax")
    rig.set(rax=0x2A, rdx=0xF4)
    qualification = IoQualification(4, IoDirection.OUT, port=0xF4).encode()
    assert rig.dispatch(rig.exit_for(ExitReason.IO_INSTRUCTION, insn, qualification)) is ExitDecision.STOP
    assert rig.partition.result is not None and rig.partition.result.exit_code == 0x2A


def test_the_first_shutdown_wins(rig: Rig) -> None:
    rig.dispatch(VmExit(ExitReason.TRIPLE_FAULT, 0))
    rig.dispatch(VmExit(ExitReason.TASK_SWITCH, 0))
    assert rig.partition.result is not None
    assert rig.partition.result.exit_code == RunEnd.TRIPLE_FAULT
