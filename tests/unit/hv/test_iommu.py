"""VT-d-style remapping tables and ACPI tables, without a guest."""

from __future__ import annotations

import pytest

from vtemu.hv import acpi
from vtemu.hv.iommu import DmaBlocked, FaultReason, RemappingUnit, SourceId
from vtemu.machine.memory import HostMemory, HostRegion, PageAllocator

DEVICE = SourceId(0, 3)
OTHER = SourceId(0, 4)
RAM_HPA = 0x10_0000_0000


@pytest.fixture
def unit() -> RemappingUnit:
    host = HostMemory()
    host.add(HostRegion("ram", RAM_HPA, 1 << 20))
    private = host.add(HostRegion("private", 0x80_0000_0000, 1 << 20))
    unit = RemappingUnit(host, PageAllocator(private))
    unit.grant(1, 0x0, RAM_HPA, 0x10000)
    unit.grant(1, 0x20000, RAM_HPA + 0x20000, 0x1000, writable=False)
    unit.attach(DEVICE, 1)
    return unit


def test_granted_pages_translate_with_offset(unit: RemappingUnit) -> None:
    assert unit.translate(DEVICE, 0x1234, write=True) == RAM_HPA + 0x1234
    assert unit.translate(DEVICE, 0x20010, write=False) == RAM_HPA + 0x20010


@pytest.mark.parametrize("source, address, write, reason", [
    (SourceId(1, 3), 0x0, False, FaultReason.ROOT_NOT_PRESENT),
    (OTHER, 0x0, False, FaultReason.CONTEXT_NOT_PRESENT),
    (DEVICE, 1 << 48, False, FaultReason.ADDRESS_BEYOND_WIDTH),
    (DEVICE, 0x20000, True, FaultReason.WRITE_NOT_ALLOWED),
    (DEVICE, 0x10000, False, FaultReason.READ_NOT_ALLOWED),
    (DEVICE, RAM_HPA, True, FaultReason.WRITE_NOT_ALLOWED),
])
def test_refused_requests_fault_with_their_reason(unit: RemappingUnit, source: SourceId,
                                                  address: int, write: bool,
                                                  reason: FaultReason) -> None:
    with pytest.raises(DmaBlocked) as blocked:
        unit.translate(source, address, write)
    assert blocked.value.fault.reason is reason
    assert unit.faults[-1].address == address and unit.faults[-1].write == write


def test_range_stops_at_the_first_refused_page(unit: RemappingUnit) -> None:
    assert len(unit.translate_range(DEVICE, 0xF800, 0x800, write=True)) == 1
    with pytest.raises(DmaBlocked) as blocked:
        unit.translate_range(DEVICE, 0xF800, 0x1000, write=True)
    assert blocked.value.fault.address == 0x10000


def test_context_entry_holds_domain_and_address_width(unit: RemappingUnit) -> None:
    root = unit.host.read_u64(unit.root_table)
    context = (root & ~0xFFF) + DEVICE.devfn * 16
    assert unit.host.read_u64(context) & 1
    assert unit.host.read_u64(context + 8) == (1 << 8) | 0b010


def _sums_to_zero(data: bytes) -> bool:
    return sum(data) & 0xFF == 0


def test_acpi_tables_checksum_and_describe_every_cpu() -> None:
    page = acpi.tables_page(4)
    base = acpi.ACPI_TABLES_GPA
    rsdp = page[:20]
    assert rsdp[:8] == b"RSD PTR " and _sums_to_zero(rsdp)
    rsdt_at = int.from_bytes(rsdp[16:20], "little") - base
    rsdt_length = int.from_bytes(page[rsdt_at + 4:rsdt_at + 8], "little")
    assert page[rsdt_at:rsdt_at + 4] == b"RSDT" and _sums_to_zero(page[rsdt_at:rsdt_at + rsdt_length])
    madt_at = int.from_bytes(page[rsdt_at + 36:rsdt_at + 40], "little") - base
    madt_length = int.from_bytes(page[madt_at + 4:madt_at + 8], "little")
    madt = page[madt_at:madt_at + madt_length]
    assert madt[:4] == b"APIC" and _sums_to_zero(madt)
    assert int.from_bytes(madt[36:40], "little") == 0xFEE00000
    entries = [madt[i:i + 8] for i in range(44, madt_length, 8)]
    assert [(e[0], e[1], e[3], e[4] & 1) for e in entries] == [(0, 8, n, 1) for n in range(4)]
