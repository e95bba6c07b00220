"""ACPI tables that describe a partition's processors: RSDP -> RSDT -> MADT.

The hypervisor builds them, as QEMU hands SeaBIOS its tables, in one read-only page of the
BIOS area (GPA E0000h, inside the legacy hole that is otherwise unbacked), where an OS looks
for the RSDP: on a 16-byte boundary between E0000h and FFFFFh (ACPI 6.5 section 5.2.5.1).

- RSDP (5.2.5.3), ACPI 1.0 form (revision 0, 20 bytes): "RSD PTR ", checksum over the 20
  bytes, OEM ID, revision, RSDT address.
- RSDT (5.2.7): the standard header (5.2.6) and one 32-bit pointer, to the MADT.
- MADT (5.2.12): header with signature "APIC", local APIC address FEE00000h, flags bit 0
  PCAT_COMPAT (the 8259 pair is present), then one Processor Local APIC structure (type 0,
  length 8: ACPI processor UID, APIC ID, flags bit 0 Enabled; 5.2.12.2) per vCPU. No I/O APIC.
Every table's bytes, checksum included, sum to 0 mod 256 (5.2.6).
"""

from __future__ import annotations

import struct

from vtemu.machine import layout

ACPI_TABLES_GPA = 0xE0000
RSDP_GPA = ACPI_TABLES_GPA
RSDT_GPA = ACPI_TABLES_GPA + 0x20
MADT_GPA = ACPI_TABLES_GPA + 0x80
OEM_ID = b"VTEMU "            # 6 bytes
OEM_TABLE_ID = b"VTEMUVM "    # 8 bytes
CREATOR_ID = b"VTMU"
HEADER = struct.Struct("<4sIBB6s8sI4sI")   # signature, length, revision, checksum, OEM ids...
RSDP = struct.Struct("<8sB6sBI")
RSDT_REVISION = 1
MADT_REVISION = 1
MADT_PCAT_COMPAT = 1
LOCAL_APIC_ENTRY = struct.Struct("<BBBBI")   # type 0, length 8, UID, APIC ID, flags
LOCAL_APIC_TYPE = 0
LOCAL_APIC_ENABLED = 1


def checksum(data: bytes) -> int:
    """The byte that makes `data` sum to zero (with its own checksum byte still 0)."""
    return (-sum(data)) & 0xFF


def _table(signature: bytes, revision: int, body: bytes) -> bytes:
    length = HEADER.size + len(body)
    header = HEADER.pack(signature, length, revision, 0, OEM_ID, OEM_TABLE_ID, 1, CREATOR_ID, 1)
    table = bytearray(header + body)
    table[9] = checksum(bytes(table))
    return bytes(table)


def madt(apic_ids: list[int]) -> bytes:
    body = struct.pack("<II", layout.LAPIC_GPA, MADT_PCAT_COMPAT)
    for uid, apic_id in enumerate(apic_ids):
        body += LOCAL_APIC_ENTRY.pack(LOCAL_APIC_TYPE, LOCAL_APIC_ENTRY.size, uid, apic_id,
                                      LOCAL_APIC_ENABLED)
    return _table(b"APIC", MADT_REVISION, body)


def rsdt(table_addresses: list[int]) -> bytes:
    return _table(b"RSDT", RSDT_REVISION, b"".join(struct.pack("<I", a) for a in table_addresses))


def rsdp(rsdt_address: int) -> bytes:
    data = bytearray(RSDP.pack(b"RSD PTR ", 0, OEM_ID, 0, rsdt_address))
    data[8] = checksum(bytes(data))
    return bytes(data)


def tables_page(vcpus: int) -> bytes:
    """The 4 KiB page mapped at ACPI_TABLES_GPA."""
    page = bytearray(4096)
    madt_bytes = madt(list(range(vcpus)))
    if MADT_GPA - ACPI_TABLES_GPA + len(madt_bytes) > len(page):
        raise ValueError(f"{vcpus} processors do not fit one page of ACPI tables")
    pieces = ((RSDP_GPA, rsdp(RSDT_GPA)), (RSDT_GPA, rsdt([MADT_GPA])), (MADT_GPA, madt_bytes))
    end = 0
    for gpa, data in pieces:
        offset = gpa - ACPI_TABLES_GPA
        if offset < end:
            raise ValueError("ACPI tables overlap")
        page[offset:offset + len(data)] = data
        end = offset + len(data)
    return bytes(page)
