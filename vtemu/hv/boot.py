"""Building a run: host memory, the firmware ROM, partitions, and each vCPU's VMCS by mode."""

from __future__ import annotations

from typing import Callable

from vtemu.errors import BadInput
from vtemu.hv.memory import create_rom
from vtemu.hv.partition import Partition, PartitionSpec
from vtemu.hv.smp import configure_processor
from vtemu.machine.memory import HostMemory
from vtemu.modes import MODES

def build_partitions(specs: list[PartitionSpec], firmware: bytes,
                     console_for: Callable[[int, PartitionSpec], Callable[[bytes], None]]
                     ) -> list[Partition]:
    host = HostMemory()
    rom = create_rom(host, firmware)
    partitions = []
    for index, spec in enumerate(specs):
        if spec.mode not in MODES:
            raise BadInput(f"unknown mode {spec.mode!r} (available: {', '.join(sorted(MODES))})")
        partition = Partition(index, spec, host, rom, console_for(index, spec))
        for cpu in partition.vcpus:
            MODES[spec.mode](cpu, partition)
            partition.paging.configure(cpu)
            configure_processor(cpu, partition)
        partitions.append(partition)
    return partitions
