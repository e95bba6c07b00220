"""Hypercall parameters in guest-physical memory, checked before they are touched.

TLFS "Hypercall Inputs": input and output parameter lists sit at 8-byte-aligned GPAs and must not cross a
page boundary (HV_STATUS_INVALID_ALIGNMENT otherwise). vtemu adds what the TLFS leaves to
the implementation: a GPA that is not the partition's RAM (ROM, the legacy hole, beyond the
end of RAM) is HV_STATUS_INVALID_PARAMETER, and an output into a page the guest may not
write (the hypercall page overlay) is HV_STATUS_ACCESS_DENIED. Nothing here can raise
anything but HypercallError on guest input.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from vtemu.hv.hypercalls.abi import PAGE_SIZE, PARAMETER_ALIGNMENT, HvStatus, HypercallError

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu


def ram_hpa(partition: "Partition", gpa: int, length: int) -> int:
    """The host address of [gpa, gpa+length) if it is all guest RAM (else INVALID_PARAMETER)."""
    if gpa < 0 or length < 0 or gpa + length > 1 << 52:
        raise HypercallError(HvStatus.INVALID_PARAMETER, f"GPA {gpa:#x}+{length} is out of range")
    hpa = partition.memory.gpa_to_hpa(gpa, max(length, 1))
    if hpa is None or partition.memory.hpa_to_gpa(hpa) != gpa:
        raise HypercallError(HvStatus.INVALID_PARAMETER, f"GPA {gpa:#x}+{length} is not partition RAM")
    return hpa


def check_parameter_block(gpa: int, length: int) -> None:
    """TLFS "Hypercall Inputs": 8-byte aligned, inside one page."""
    if gpa % PARAMETER_ALIGNMENT:
        raise HypercallError(HvStatus.INVALID_ALIGNMENT, f"parameter GPA {gpa:#x} is not 8-byte aligned")
    if (gpa % PAGE_SIZE) + length > PAGE_SIZE:
        raise HypercallError(HvStatus.INVALID_ALIGNMENT,
                             f"parameters at {gpa:#x}+{length} cross a page boundary")


def read_parameters(partition: "Partition", gpa: int, length: int) -> bytes:
    check_parameter_block(gpa, length)
    return partition.host.read(ram_hpa(partition, gpa, length), length)  # type: ignore[arg-type]


def read_qwords(partition: "Partition", gpa: int, count: int) -> tuple[int, ...]:
    return struct.unpack(f"<{count}Q", read_parameters(partition, gpa, 8 * count))


def read_guest_bytes(partition: "Partition", gpa: int, length: int) -> bytes:
    """A byte buffer (no alignment rule) anywhere in RAM: the console's text."""
    return partition.host.read(ram_hpa(partition, gpa, length), length)  # type: ignore[arg-type]


def write_guest(partition: "Partition", cpu: "VmxCpu", gpa: int, data: bytes) -> None:
    """A hypervisor write to guest RAM, through the vCPU so translated code on the page and
    the shadow page tables hear of it (vcpu.write_host)."""
    hpa = ram_hpa(partition, gpa, len(data))
    if partition.memory.is_rom(gpa) or partition.memory.is_rom(gpa + len(data) - 1):
        raise HypercallError(HvStatus.ACCESS_DENIED, f"GPA {gpa:#x} is not writable by the guest")
    cpu.vcpu.write_host(hpa, data)

