"""The copy engine of each partition, behind the partition's DMA-remapping domain.

The root partition -- in vtemu, the hypervisor itself: the code that owns the host memory,
the remapping hardware and every device model, and runs no guest code -- programs one
remapping unit per child partition: the copy engine (requester id 00:03.0) is attached to
domain `partition index + 1`, whose second-level tables grant read/write exactly to the
partition's RAM at its guest-physical addresses. The firmware ROM, the ACPI page, the legacy
hole, other partitions' RAM and the hypervisor's private memory are in no domain, so a DMA
there is refused and logged (hv/iommu.py), whatever bus address the guest programs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from vtemu.devices.dma_copy import REGISTER_SPACE, CopyEngine, DmaRefused
from vtemu.hv.iommu import DmaBlocked, RemappingUnit, SourceId
from vtemu.machine.addr import HPA
from vtemu.machine.memory import HostMemory
from vtemu.mmu.ept import EptPerm

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition

COPY_ENGINE_BASE = 0xC000      # vtemu's choice: free on QEMU's pc machine
COPY_ENGINE_IRQ = 5            # ISA IRQ 5, unused by the reference machine
COPY_ENGINE_SOURCE = SourceId(bus=0, device=3, function=0)


class RemappedBusMaster:
    """A device's bus master port: every address goes through the remapping unit."""

    def __init__(self, unit: RemappingUnit, source: SourceId, host: HostMemory,
                 written: Callable[[int, int], None] = lambda hpa, length: None) -> None:
        self.unit = unit
        self.source = source
        self.host = host
        self.written = written          # who must hear of a write (code derived from the page)

    def check(self, address: int, length: int, write: bool) -> None:
        try:
            self.unit.translate_range(self.source, address, length, write)
        except DmaBlocked as blocked:
            fault = blocked.fault
            raise DmaRefused(fault.address, fault.write, int(fault.reason)) from None

    def read(self, address: int, length: int) -> bytes:
        pieces = self.unit.translate_range(self.source, address, length, write=False)
        return b"".join(self.host.read(HPA(hpa), size) for hpa, size in pieces)

    def write(self, address: int, data: bytes) -> None:
        offset = 0
        for hpa, size in self.unit.translate_range(self.source, address, len(data), write=True):
            self.host.write(HPA(hpa), data[offset:offset + size])
            self.written(hpa, size)
            offset += size


def attach_copy_engine(partition: "Partition") -> CopyEngine:
    unit = RemappingUnit(partition.host, partition.memory.allocator)
    domain = partition.index + 1
    for piece in partition.memory.ranges:
        if piece.perms & EptPerm.W:         # RAM only: never the ROM or the ACPI page
            unit.grant(domain, piece.gpa, piece.hpa, piece.size)
    unit.attach(COPY_ENGINE_SOURCE, domain)
    engine = CopyEngine(RemappedBusMaster(unit, COPY_ENGINE_SOURCE, partition.host,
                                          _memory_written(partition)),
                        partition.pic.irq_line(COPY_ENGINE_IRQ))
    partition.ports.attach("copy-engine", COPY_ENGINE_BASE, REGISTER_SPACE, engine, byte_wide=False)
    partition.iommu = unit
    return engine


def _memory_written(partition: "Partition") -> Callable[[int, int], None]:
    """A DMA write is a store no vCPU's TLB saw: code any vCPU scanned or translated from the
    page must go (machine/code_pages.py), and a shadow MMU must hear of it, as for a VMM write
    made on behalf of the vCPU that started the copy."""
    def written(hpa: int, length: int) -> None:
        partition.current_cpu.vcpu.host_memory_written(hpa, length)
    return written
