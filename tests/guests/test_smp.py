"""Several vCPUs: INIT-SIPI-SIPI bring-up (smp_hello), spinlocks without mitigation, with
PAUSE-loop exiting and enlightened (spinlock, PV=1 under --mode pv), time slicing and
determinism."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import pytest

from tests.guests.harness import GUESTS, _firmware
from vtemu.asm import build_guest
from vtemu.hv.boot import build_partitions
from vtemu.hv.partition import Partition, PartitionSpec
from vtemu.hv.runloop import RunLimits, Runner
from vtemu.modes import SOURCE_DEFINES
from vtemu.vmx.reasons import ExitReason

TIMEOUT_S = 120.0


@dataclass
class SmpRun:
    serial: bytes
    exit_code: int
    partition: Partition
    exits: list[tuple[int, str, int, int]]      # (vCPU, reason, RIP, instructions) in order

    @property
    def text(self) -> str:
        return self.serial.decode()

    def reasons(self, reason: ExitReason) -> list[tuple[int, str, int, int]]:
        return [e for e in self.exits if e[1] == reason.name]


@functools.cache
def _image(name: str, defines: tuple[tuple[str, str], ...]) -> bytes:
    return build_guest(GUESTS / f"{name}.S", dict(defines))


def run_smp(name: str, vcpus: int, ple: bool = False, slice_instructions: int | None = None,
            mode: str = "vtx", defines: dict[str, str] | None = None) -> SmpRun:
    serial = bytearray()
    extra = {} if slice_instructions is None else {"slice_instructions": slice_instructions}
    spec = PartitionSpec(name=name, kernel=_image(name, tuple(sorted((defines or {}).items()))),
                         vcpus=vcpus, ple=ple, mode=mode, **extra)  # type: ignore[arg-type]
    partitions = build_partitions([spec], _firmware(), lambda index, spec: serial.extend)
    partition = partitions[0]
    exits: list[tuple[int, str, int, int]] = []
    partition.exit_observers.append(
        lambda exit, outcome, ns: exits.append((exit.vcpu, exit.reason.name, exit.guest_rip,
                                                exit.instructions)))
    Runner(partitions, RunLimits(timeout_s=TIMEOUT_S)).run()
    assert partition.result is not None
    return SmpRun(bytes(serial), partition.result.exit_code, partition, exits)


@functools.cache
def smp_hello(vcpus: int) -> SmpRun:
    return run_smp("smp_hello", vcpus)


@pytest.mark.parametrize("vcpus", [1, 2, 4])
def test_smp_hello_every_cpu_prints_its_apic_id(vcpus: int) -> None:
    run = smp_hello(vcpus)
    assert run.exit_code == 0, run.text
    assert f"MADT lists cpus: {vcpus}\n" in run.text
    ids = sorted(int(n) for n in re.findall(r"^cpu (\d+) up$", run.text, re.M))
    assert ids == list(range(vcpus))
    assert f"all {vcpus} cpus up; BSP x2APIC id 0\n" in run.text


def test_aps_start_through_init_and_sipi_exits() -> None:
    run = smp_hello(4)
    assert sorted(e[0] for e in run.reasons(ExitReason.INIT_SIGNAL)) == [1, 2, 3]
    sipis = run.reasons(ExitReason.SIPI)
    # Two SIPIs are sent; the second finds each AP running and is discarded (SDM 8.4.4.1).
    assert sorted(e[0] for e in sipis) == [1, 2, 3]
    assert all(e[2] == 0xFFF0 for e in sipis)   # parked in the INIT state (SDM Table 9-1)
    assert run.partition.vcpus[3].vcpu.instructions_retired > 0


def test_smp_hello_is_reproducible_exit_for_exit() -> None:
    first, second = run_smp("smp_hello", 4), run_smp("smp_hello", 4)
    assert first.serial == second.serial
    assert first.exits == second.exits


def spin_iterations(run: SmpRun) -> int:
    match = re.search(r"spin iterations (\d+)", run.text)
    assert match, run.text
    return int(match.group(1))


@functools.cache
def spinlock(vcpus: int, ple: bool) -> SmpRun:
    return run_smp("spinlock", vcpus, ple=ple)


@pytest.mark.parametrize("vcpus", [1, 2, 4])
@pytest.mark.parametrize("ple", [False, True])
def test_spinlock_count_is_exact(vcpus: int, ple: bool) -> None:
    run = spinlock(vcpus, ple)
    expected = 200 * vcpus
    assert f"count {expected} expected {expected}" in run.text
    assert run.exit_code == 0


def test_pause_loop_exiting_cuts_spin_waste_with_four_vcpus() -> None:
    plain, ple = spinlock(4, False), spinlock(4, True)
    assert spin_iterations(ple) < spin_iterations(plain)
    assert not plain.reasons(ExitReason.PAUSE)
    assert ple.reasons(ExitReason.PAUSE)
    assert ple.partition.scheduler.stats.yields["pause-loop"] == len(ple.reasons(ExitReason.PAUSE))


@functools.cache
def enlightened_spinlock(vcpus: int) -> SmpRun:
    return run_smp("spinlock", vcpus, mode="pv", defines=SOURCE_DEFINES["pv"])


def long_spin_notifications(run: SmpRun) -> int:
    return sum(run.partition.hypercalls.long_spin_waits.values())  # type: ignore[attr-defined]


@pytest.mark.parametrize("vcpus", [1, 2, 4])
def test_enlightened_spinlock_count_is_exact(vcpus: int) -> None:
    run = enlightened_spinlock(vcpus)
    expected = 200 * vcpus
    assert f"spinlock: count {expected} expected {expected}" in run.text
    assert run.exit_code == 0


def test_enlightened_spinner_notifies_and_yields_with_four_vcpus() -> None:
    run = enlightened_spinlock(4)
    notifications = long_spin_notifications(run)
    assert notifications > 0
    # Every HvCallNotifyLongSpinWait (TLFS 0008h) ended the caller's turn, and no PAUSE exited.
    assert run.partition.scheduler.stats.yields == {"long-spin": notifications}
    assert not run.reasons(ExitReason.PAUSE)


def test_enlightened_single_vcpu_never_notifies() -> None:
    run = enlightened_spinlock(1)
    assert spin_iterations(run) == 0
    assert long_spin_notifications(run) == 0


def test_both_cures_cut_spin_waste_with_four_vcpus() -> None:
    plain = spin_iterations(spinlock(4, False))
    assert spin_iterations(spinlock(4, True)) < plain
    assert spin_iterations(enlightened_spinlock(4)) < plain


def test_one_vcpu_never_spins() -> None:
    assert spin_iterations(spinlock(1, False)) == 0


def test_slice_length_changes_the_interleaving_deterministically() -> None:
    short = run_smp("smp_hello", 2, slice_instructions=500)
    assert short.exit_code == 0
    assert short.partition.scheduler.stats.preemptions > smp_hello(2).partition.scheduler.stats.preemptions
    again = run_smp("smp_hello", 2, slice_instructions=500)
    assert again.exits == short.exits
