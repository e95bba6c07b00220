"""A VMBus-like channel between an enlightened guest and the hypervisor, with two synthetic
devices: storage on the `--disk` image and a console on COM1's output stream.

    ring.py          ring buffers in guest memory (header page + data pages by GPA list)
    channel.py       contact, offers, open/close, serving a channel on a signal
    storage_vsp.py   the storage device's host end (read/write sector ranges by GPA)
    console_vsp.py   the console's host end
    hypercall.py     HvCallPostMessage (005Ch) and HvCallSignalEvent (005Dh), TLFS-shaped

The host of a partition is made on the first hypercall that needs it (only an enlightened
guest ever makes one), with the devices that partition has: storage only with `--disk`.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Callable

from vtemu.hv.vmbus.channel import VmbusHost, Vsp
from vtemu.hv.vmbus.console_vsp import ConsoleVsp
from vtemu.hv.vmbus.memory import GuestRam
from vtemu.hv.vmbus.storage_vsp import StorageVsp

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition

_HOSTS: "weakref.WeakKeyDictionary[Partition, PartitionVmbus]" = weakref.WeakKeyDictionary()


class PartitionVmbus:
    """A partition's channel host and the interrupt vectors it raised during one hypercall."""

    def __init__(self, partition: "Partition") -> None:
        ram = GuestRam(partition.memory, writer=_through_vcpus(partition),
                       read_only=_overlays(partition))
        devices: list[Vsp] = []
        if partition.disk is not None:
            devices.append(StorageVsp(ram, partition.disk.image))
        devices.append(ConsoleVsp(partition.console))
        self.raised: list[int] = []
        self.host = VmbusHost(ram, self.raised.append, devices)

    def take_raised(self) -> list[int]:
        vectors, self.raised[:] = list(self.raised), []
        return vectors


def _through_vcpus(partition: "Partition") -> Callable[[int, bytes], None]:
    """A host write into guest RAM, told to every vCPU (each has its own translated code);
    the bytes are the same each time, so only the first write changes memory."""
    def write(hpa: int, data: bytes) -> None:
        for cpu in partition.vcpus:
            cpu.vcpu.write_host(hpa, data)
    return write


def _overlays(partition: "Partition") -> Callable[[int], bool]:
    """Pages the guest cannot write: the hypercall page overlay (pv mode)."""
    def read_only(gpa: int) -> bool:
        service = getattr(partition, "hypercalls", None)
        return service is not None and service.page.contains(gpa)
    return read_only


def vmbus_of(partition: "Partition") -> PartitionVmbus:
    """The partition's channel host, made on first use."""
    found = _HOSTS.get(partition)
    if found is None:
        found = _HOSTS[partition] = PartitionVmbus(partition)
    return found
