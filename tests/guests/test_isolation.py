"""Child partitions in one run: a hostile guest (physscan) reads its whole guest-physical
address space for a canary that the test planted in the other partition's RAM, in the
hypervisor's private memory (both partitions' EPT tables, a fresh VMM-private page) and,
as the positive control, in its own RAM; a second hostile guest (dma_attack) aims DMA
writes at the victim's RAM and the hypervisor's memory by their host addresses. The scanner
must find exactly its own canary; the victim (hello) must run to completion with its own
output, and its RAM must be byte for byte what the same victim leaves running alone, and
stay so however long the hostile guests go on after it."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests.guests.harness import GUESTS, _firmware
from tests.guests.test_physscan import CANARY, LAST_TWO_ENTRIES, PLANTED, RAM_CANARY_GPA
from vtemu.asm import build_guest
from vtemu.hv.boot import build_partitions
from vtemu.hv.outcome import Shutdown
from vtemu.hv.partition import Partition, PartitionSpec
from vtemu.hv.runloop import RunLimits, Runner

pytestmark = pytest.mark.slow   # physscan reads 128 MiB: a couple of seconds

EPT_ADDRESS_MASK = 0x000F_FFFF_FFFF_F000
VICTIM_CANARY_GPA = 0x0040_0000     # in the victim's RAM, untouched by hello
TIMEOUT_S = 300.0


@dataclass
class IsolationRun:
    victim: Partition
    hostile: Partition
    serial: dict[int, bytearray]
    victim_ram_at_end: bytes = b""
    victim_ram_alone: bytes = b""
    dma_attacker: Partition | None = None
    plants: dict[str, tuple[int, bytes]] = field(default_factory=dict)


def _plant_private(partition: Partition, run: IsolationRun, who: str) -> None:
    memory, host = partition.memory, partition.host
    root = memory.ept.eptp & EPT_ADDRESS_MASK
    pdpt = host.read_u64(root) & EPT_ADDRESS_MASK
    fresh = memory.allocator.alloc_table_page()
    for where, hpa, data in ((f"{who} EPT PML4", root + LAST_TWO_ENTRIES, CANARY),
                             (f"{who} EPT PDPT", pdpt + LAST_TWO_ENTRIES, CANARY),
                             (f"{who} VMM-private page", fresh, CANARY * 256)):
        host.write(hpa, data)
        run.plants[where] = (hpa, data)


def _plant_ram(partition: Partition, gpa: int) -> int:
    hpa = partition.memory.gpa_to_hpa(gpa, len(CANARY))
    assert hpa is not None
    partition.host.write(hpa, CANARY)
    return hpa


def _victim() -> PartitionSpec:
    return PartitionSpec(name="victim", kernel=build_guest(GUESTS / "hello.S", {}))


def _plant_victim(victim: Partition, run: IsolationRun) -> None:
    run.plants["victim RAM"] = (_plant_ram(victim, VICTIM_CANARY_GPA), CANARY)
    run.plants["victim RAM at the hostile canary's GPA"] = (_plant_ram(victim, RAM_CANARY_GPA), CANARY)
    _plant_private(victim, run, "victim")


def _snapshot_when_done(run: IsolationRun) -> None:
    victim = run.victim

    def observe(exit, outcome, elapsed_ns) -> None:  # type: ignore[no-untyped-def]
        if isinstance(outcome, Shutdown) and not run.victim_ram_at_end:
            run.victim_ram_at_end = bytes(victim.memory.ram.buffer)
    victim.exit_observers.append(observe)


@pytest.fixture(scope="module")
def isolation_run() -> IsolationRun:
    specs = [_victim(),
             PartitionSpec(name="hostile", kernel=build_guest(GUESTS / "physscan.S", {})),
             PartitionSpec(name="dma_attack", kernel=build_guest(GUESTS / "dma_attack.S", {}))]
    serial: dict[int, bytearray] = {0: bytearray(), 1: bytearray(), 2: bytearray()}
    partitions = build_partitions(specs, _firmware(), lambda index, spec: serial[index].extend)
    victim, hostile, attacker = partitions
    run = IsolationRun(victim, hostile, serial, dma_attacker=attacker)
    _plant_victim(victim, run)
    _plant_ram(hostile, RAM_CANARY_GPA)              # the positive control
    _plant_private(hostile, run, "hostile")
    _snapshot_when_done(run)
    Runner(partitions, RunLimits(timeout_s=TIMEOUT_S)).run()
    (alone,) = build_partitions([_victim()], _firmware(), lambda index, spec: bytearray().extend)
    _plant_victim(alone, IsolationRun(alone, alone, {}))
    Runner([alone], RunLimits(timeout_s=TIMEOUT_S)).run()
    run.victim_ram_alone = bytes(alone.memory.ram.buffer)
    return run


def test_every_partition_runs_to_completion_with_its_own_output(isolation_run) -> None:
    run = isolation_run
    assert bytes(run.serial[0]) == b"Hello from a vtemu guest!\n"
    assert run.victim.result is not None and run.victim.result.exit_code == 0
    assert run.hostile.result is not None and run.hostile.result.exit_code == 0
    attacker = run.dma_attacker
    assert attacker is not None and attacker.result is not None and attacker.result.exit_code == 0
    assert bytes(run.serial[2]).endswith(b"dma_attack: copies that went through: 0\n")
    assert attacker.iommu.faults and attacker.copy_engine.bytes_copied == 0


def test_the_hostile_guest_finds_only_its_own_canary(isolation_run) -> None:
    assert bytes(isolation_run.serial[1]) == PLANTED


def test_the_victims_memory_and_the_hypervisors_are_unchanged(isolation_run) -> None:
    run = isolation_run
    assert run.victim_ram_at_end
    assert bytes(run.victim.memory.ram.buffer) == run.victim_ram_at_end
    assert run.victim_ram_at_end == run.victim_ram_alone   # what its own run made it, nothing more
    host = run.victim.host
    for where, (hpa, data) in run.plants.items():
        assert host.read(hpa, len(data)) == data, where
    # The plants were where the hostile guest has no guest-physical address for them.
    hostile_ranges = run.hostile.memory.ranges
    for where, (hpa, data) in run.plants.items():
        assert not any(piece.hpa <= hpa < piece.hpa + piece.size for piece in hostile_ranges), where
