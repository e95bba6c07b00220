"""DMA remapping in the shape of Intel VT-d (Intel Virtualization Technology for Directed I/O,
Architecture Specification, chapter 3 "DMA Remapping" and chapter 9 "Translation Structure
Formats").

Every DMA request carries its device's source id (PCI bus, device, function). The remapping
hardware looks the bus up in the root table (9.1: 256 16-byte root entries, bit 0 Present,
bits 63:12 context-table pointer), the device-function in that bus's context table (9.3:
256 16-byte entries; low qword bit 0 Present, bits 3:2 translation type 00b = untranslated
requests through second-level tables, bits 63:12 the second-level page-table pointer; high
qword bits 2:0 address width (010b: 48-bit, 4-level), bits 23:8 domain id), and walks the
domain's second-level tables (9.8) whose entries carry Read (bit 0) and Write (bit 1). The
second-level format is EPT's (VT-d 3.6 shares it with the processor), so the tables are
built with vtemu's EPT builder; the walk here reads them entry by entry as the hardware would.

A request the tables do not allow is blocked: nothing is read or written, and a fault record
(7.1.3: source id, address, read/write, fault reason) is appended to the fault log:
  1h root entry not present, 2h context entry not present, 4h address above the domain's
  address width, 5h write to a page without Write, 6h read of a page without Read.
The tables live in the partition's VMM-private memory, where no guest mapping reaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from vtemu.machine.addr import GPA, HPA, PAGE_SIZE
from vtemu.machine.memory import HostMemory, PageAllocator
from vtemu.mmu.ept import EptPerm, EptTables

ENTRY_BYTES = 16
PRESENT = 1
ADDRESS_MASK = 0x000F_FFFF_FFFF_F000
AW_48_BIT = 0b010           # context entry AW: 4-level, 48-bit address width (9.3)
ADDRESS_WIDTH = 48
DOMAIN_SHIFT = 8
LEVELS = (39, 30, 21, 12)   # second-level table index shifts, PML4 down to PT
READ, WRITE, LARGE = 1, 2, 1 << 7


class FaultReason(IntEnum):
    """Non-recoverable fault reasons (VT-d 7.1.3, Table 7-? "Fault reason encodings")."""

    ROOT_NOT_PRESENT = 0x1
    CONTEXT_NOT_PRESENT = 0x2
    ADDRESS_BEYOND_WIDTH = 0x4
    WRITE_NOT_ALLOWED = 0x5
    READ_NOT_ALLOWED = 0x6


@dataclass(frozen=True)
class SourceId:
    """A PCI requester id: bus 15:8, device 7:3, function 2:0."""

    bus: int
    device: int
    function: int = 0

    @property
    def devfn(self) -> int:
        return (self.device << 3) | self.function

    def __str__(self) -> str:
        return f"{self.bus:02x}:{self.device:02x}.{self.function}"


@dataclass(frozen=True)
class RemappingFault:
    source: SourceId
    address: int
    write: bool
    reason: FaultReason

    def describe(self) -> str:
        access = "write" if self.write else "read"
        return (f"DMA remapping fault: device {self.source} {access} of {self.address:#x}: "
                f"{self.reason.name.lower().replace('_', ' ')} (reason {int(self.reason):#x})")


class DmaBlocked(Exception):
    def __init__(self, fault: RemappingFault) -> None:
        super().__init__(fault.describe())
        self.fault = fault


class RemappingUnit:
    """One DMA-remapping hardware unit and the tables its owner (the hypervisor) programs."""

    def __init__(self, host: HostMemory, allocator: PageAllocator) -> None:
        self.host = host
        self.allocator = allocator
        self.root_table = allocator.alloc_table_page()
        self.domains: dict[int, EptTables] = {}
        self.faults: list[RemappingFault] = []
        self.translations = 0

    # --- programming (the root partition's side) ---------------------------------------------
    def domain(self, domain_id: int) -> EptTables:
        """The second-level tables of a domain, created empty (every access blocked)."""
        if domain_id not in self.domains:
            self.domains[domain_id] = EptTables(self.host, self.allocator)
        return self.domains[domain_id]

    def grant(self, domain_id: int, iova: int, hpa: int, size: int, writable: bool = True) -> None:
        perms = EptPerm.RW if writable else EptPerm.R
        self.domain(domain_id).map(GPA(iova), HPA(hpa), size, perms)

    def attach(self, source: SourceId, domain_id: int) -> None:
        """Point the device's context entry at the domain's tables (VT-d 9.1, 9.3)."""
        root = self.root_table + source.bus * ENTRY_BYTES
        context_table = self.host.read_u64(root) & ADDRESS_MASK
        if not self.host.read_u64(root) & PRESENT:
            context_table = self.allocator.alloc_table_page()
            self.host.write_u64(root, context_table | PRESENT)
        entry = context_table + source.devfn * ENTRY_BYTES
        tables = self.domain(domain_id)
        self.host.write_u64(entry, (tables.eptp & ADDRESS_MASK) | PRESENT)   # TT = 00b
        self.host.write_u64(entry + 8, (domain_id << DOMAIN_SHIFT) | AW_48_BIT)

    # --- a DMA request (the hardware's side) ---------------------------------------------------
    def translate(self, source: SourceId, address: int, write: bool) -> int:
        """The host-physical address of one byte a device reads or writes; raises DmaBlocked."""
        self.translations += 1
        root = self.host.read_u64(self.root_table + source.bus * ENTRY_BYTES)
        if not root & PRESENT:
            return self._fault(source, address, write, FaultReason.ROOT_NOT_PRESENT)
        context = self.host.read_u64((root & ADDRESS_MASK) + source.devfn * ENTRY_BYTES)
        if not context & PRESENT:
            return self._fault(source, address, write, FaultReason.CONTEXT_NOT_PRESENT)
        if address >> ADDRESS_WIDTH:
            return self._fault(source, address, write, FaultReason.ADDRESS_BEYOND_WIDTH)
        return self._walk(source, context & ADDRESS_MASK, address, write)

    def _walk(self, source: SourceId, table: int, address: int, write: bool) -> int:
        needed = WRITE if write else READ
        reason = FaultReason.WRITE_NOT_ALLOWED if write else FaultReason.READ_NOT_ALLOWED
        for level, shift in enumerate(LEVELS):
            entry = self.host.read_u64(table + ((address >> shift) & 0x1FF) * 8)
            if not entry & needed:
                return self._fault(source, address, write, reason)
            if entry & LARGE and 0 < level < len(LEVELS) - 1 or level == len(LEVELS) - 1:
                page = 1 << shift
                return (entry & ADDRESS_MASK & ~(page - 1)) | (address & (page - 1))
            table = entry & ADDRESS_MASK
        raise AssertionError("unreachable")

    def _fault(self, source: SourceId, address: int, write: bool, reason: FaultReason) -> int:
        fault = RemappingFault(source, address, write, reason)
        self.faults.append(fault)
        raise DmaBlocked(fault)

    def translate_range(self, source: SourceId, address: int, length: int,
                        write: bool) -> list[tuple[int, int]]:
        """(hpa, length) pieces of a whole buffer, page by page; the first refused page raises."""
        pieces = []
        while length > 0:
            size = min(length, PAGE_SIZE - (address & (PAGE_SIZE - 1)))
            pieces.append((self.translate(source, address, write), size))
            address, length = address + size, length - size
        return pieces
