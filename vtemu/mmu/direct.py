"""Paging without EPT: the page walk's "physical" addresses are host-physical.

With the "enable EPT" control 0 (SDM 25.6.2 in the numbering of `vtemu.mmu.ept`), a processor
in VMX non-root operation translates linear addresses through the paging structures that
CR3 roots, and the addresses they hold are used as they are. A hypervisor that virtualizes
memory this way points CR3 at tables it built itself (shadow page tables, `mmu/shadow.py`),
whose entries hold host-physical addresses of guest memory.
"""

from __future__ import annotations

from vtemu.machine.addr import GPA, GVA, HPA, PAGE_MASK
from vtemu.machine.translation import Fill, MemoryAccess, PagingRegs
from vtemu.mmu.entries import load_entry, store_entry
from vtemu.mmu.ept import HostMemory
from vtemu.mmu.paging import Access, walk

HOST_MAXPHYADDR = 40
_ACCESS = {(access, user): Access(write=access is MemoryAccess.WRITE, user=user,
                                  fetch=access is MemoryAccess.FETCH)
           for access in MemoryAccess for user in (False, True)}


class _HostTables:
    """EntryMemory over host-physical memory: the tables are read where CR3 says they are."""

    __slots__ = ("_host", "reads")

    def __init__(self, host: HostMemory) -> None:
        self._host = host
        self.reads = 0

    def read_entry(self, gpa: GPA, size: int) -> int:
        self.reads += 1
        return load_entry(self._host, HPA(gpa), size)

    def write_entry(self, gpa: GPA, size: int, value: int) -> None:
        store_entry(self._host, HPA(gpa), size, value)


class DirectPaging:
    """The vCPU's Translator when EPT is off: one walk of the tables CR3 roots, in host memory.

    Counters: `walks` (TLB misses translated) and `references` (entries read)."""

    def __init__(self, host: HostMemory) -> None:
        self._tables = _HostTables(host)
        self.walks = 0

    @property
    def references(self) -> int:
        return self._tables.reads

    def translate(self, paging: PagingRegs, linear: int, access: MemoryAccess, user: bool) -> Fill:
        self.walks += 1
        result = walk(paging, GVA(linear), _ACCESS[access, user], self._tables,
                      maxphyaddr=HOST_MAXPHYADDR)
        return Fill(result.gpa & PAGE_MASK, result.readable, result.writable, result.executable,
                    dirty=result.dirty)
