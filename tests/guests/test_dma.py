"""DMA through the remapping tables: legal copies land, illegal ones are refused and logged,
and a hostile guest in a second partition changes nothing outside its own RAM."""

from __future__ import annotations

import hashlib

from tests.guests.harness import _firmware, guest_image
from vtemu.hv.boot import build_partitions
from vtemu.hv.iommu import FaultReason
from vtemu.hv.partition import PartitionSpec
from vtemu.hv.runloop import RunLimits, Runner
from vtemu.machine import layout

MiB = 1 << 20


def run_partitions(*names: str):
    outputs = {name: bytearray() for name in names}
    specs = [PartitionSpec(name=name, kernel=guest_image(name), ram_size=16 * MiB) for name in names]
    partitions = build_partitions(specs, _firmware(), lambda index, spec: outputs[spec.name].extend)
    return partitions, outputs


def digest(partition, offset: int = 0, size: int = 16 * MiB) -> str:
    """The partition's RAM as the host holds it (legacy hole included: it stays zero)."""
    return hashlib.sha256(partition.memory.ram.buffer[offset:offset + size]).hexdigest()


def test_legal_copies_land_and_illegal_ones_fault() -> None:
    partitions, outputs = run_partitions("dma")
    Runner(partitions, RunLimits(timeout_s=60)).run()
    (partition,) = partitions
    assert partition.result.exit_code == 0, outputs["dma"]
    text = outputs["dma"].decode()
    assert "copied and verified 100 bytes" in text and "copied and verified 9000 bytes" in text
    assert [f.reason for f in partition.iommu.faults] == [FaultReason.WRITE_NOT_ALLOWED,
                                                          FaultReason.READ_NOT_ALLOWED]
    assert [f.address for f in partition.iommu.faults] == [0xF0000, 0xA0000]
    assert partition.copy_engine.bytes_copied == 9100


def test_hostile_dma_changes_nothing_outside_its_partition() -> None:
    partitions, outputs = run_partitions("hello", "dma_attack")
    victim, attacker = partitions
    before_attacker_low = digest(attacker, 0, 0x1000)
    Runner(partitions, RunLimits(timeout_s=60)).run()
    assert victim.result.exit_code == 0 and attacker.result.exit_code == 0
    assert outputs["hello"] == b"Hello from a vtemu guest!\n"
    assert b"copies that went through: 0" in outputs["dma_attack"]
    reasons = [f.reason for f in attacker.iommu.faults]
    assert reasons.count(FaultReason.WRITE_NOT_ALLOWED) == 4
    assert reasons.count(FaultReason.ADDRESS_BEYOND_WIDTH) == 1
    assert reasons.count(FaultReason.READ_NOT_ALLOWED) == 2
    assert attacker.iommu.faults[0].address == layout.partition_ram_hpa(0)
    assert attacker.copy_engine.bytes_copied == 0
    # Byte for byte: the victim's RAM is what its own run made it; re-running hello alone
    # gives the same RAM, so the attacker added nothing.
    alone, _ = run_partitions("hello")
    Runner(alone, RunLimits(timeout_s=60)).run()
    assert digest(victim) == digest(alone[0])
    assert digest(attacker, 0, 0x1000) == before_attacker_low
