"""Nested (two-dimensional) paging: guest linear -> GPA by the guest's tables, every GPA -> HPA by EPT.

SDM Vol. 3C 28.2.3 ("EPT-Induced VM Exits", in the numbering described in `vtemu.mmu.ept`): with EPT active,
the processor translates the GPA of every guest paging-structure entry through EPT before reading it, and then
the final GPA. A guest walk of n levels over an EPT of m levels therefore reads n*m + n + m entries when
nothing is cached (24 for 4-level over 4-level); larger pages on either side shorten n or m. The paging-
structure caches that make this cheap on silicon are what the vCPU's TLB models; each call here is a miss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vtemu.machine.addr import GPA, GVA, HPA
from vtemu.mmu.ept import (
    EptMisconfiguration,
    EptQual,
    EptTranslation,
    EptViolation,
    HostMemory,
    ept_walk,
)
from vtemu.mmu.entries import load_entry, store_entry
from vtemu.mmu.paging import Access, PageFault, PageSize, PagingRegs, walk

_EPTP_AD = 1 << 6  # EPTP bit 6: accessed/dirty flags for EPT (24.6.11)
_READ = Access()
_WRITE = Access(write=True)


@dataclass(frozen=True, slots=True)
class NestedTranslation:
    """A linear address translated all the way to host-physical memory.

    Rights are the guest's (for the privilege walked) AND the EPT's for the final page; `page_size` is the
    smaller of the guest and EPT pages, the largest region over which the translation is uniform.
    Dirty flags are only set by write walks (SDM 4.8 for the guest, 28.2.4 for EPT): a TLB fill for a read may
    install write permission only if `guest_dirty` and the EPTP has accessed/dirty flags disabled; otherwise the
    first write must come back here so the flags get set.
    """

    hpa: HPA
    gpa: GPA
    page_size: PageSize
    readable: bool
    writable: bool
    executable: bool
    guest_dirty: bool
    references: int


class _GuestTablesThroughEpt:
    """The walker's `EntryMemory` under EPT: each entry's GPA goes through EPT before host memory is touched.

    Entry reads are EPT reads, or writes when the EPTP enables accessed/dirty flags (28.2.3.2: guest paging-
    structure accesses are then treated as writes, need write permission and set the EPT dirty flag; a violation
    they cause reports both the read and the write bit, Table 27-7 note 1). The walker's accessed/dirty updates
    are writes: they reuse the translation of the re-read just before them when it allows writing and otherwise
    walk EPT for a write, which raises the violation a processor would take on the update.
    Violations carry qualification bit 7 (linear address valid) and not bit 8 (this is a paging-structure access).
    A walk that faults part-way through the accessed/dirty updates (an update refused by EPT) leaves the
    updates before it in place, as a processor would. One instance serves every call of its translator.
    """

    __slots__ = (
        "_host", "_maxphyaddr", "_eptp", "_linear", "_entry_access", "_entry_extra", "_ept_references",
        "_last_gpa", "_last",
    )

    def __init__(self, host: HostMemory, maxphyaddr: int) -> None:
        self._host = host
        self._maxphyaddr = maxphyaddr
        self._eptp = 0
        self._linear = GVA(0)
        self._entry_access = _READ
        self._entry_extra = 0  # qualification bits added to violations on entry reads
        self._ept_references: list[int] = []  # EPT entries read for each guest entry read, in order
        self._last_gpa: GPA | None = None  # the entry read most recently, and its EPT translation
        self._last: EptTranslation | None = None

    def start(self, eptp: int, linear: GVA) -> None:
        self._eptp = eptp
        self._linear = linear
        accessed_dirty = bool(eptp & _EPTP_AD)
        self._entry_access = _WRITE if accessed_dirty else _READ
        # Treated as a write, reported as read + write (Table 27-7, note to bit 0).
        self._entry_extra = EptQual.READ if accessed_dirty else 0
        self._ept_references.clear()
        self._last_gpa = None

    def ept_references(self, reads: int) -> int:
        """EPT entries read to translate the first `reads` guest-entry reads (the walk proper, before any
        accessed/dirty re-reads)."""
        return sum(self._ept_references[:reads])

    @property
    def reads(self) -> int:
        return len(self._ept_references)

    def read_entry(self, gpa: GPA, size: int) -> int:
        translation = self._translate(gpa, self._entry_access, self._entry_extra)
        self._ept_references.append(translation.references)
        self._last_gpa = gpa
        self._last = translation
        return load_entry(self._host, translation.hpa, size)

    def write_entry(self, gpa: GPA, size: int, value: int) -> None:
        translation = self._last
        if gpa != self._last_gpa or translation is None or not translation.writable:
            translation = self._translate(gpa, _WRITE, 0)
        store_entry(self._host, translation.hpa, size, value)

    def _translate(self, gpa: GPA, access: Access, extra_qualification: int) -> EptTranslation:
        try:
            return ept_walk(self._eptp, gpa, access, self._host, maxphyaddr=self._maxphyaddr)
        except EptViolation as exc:
            qualification = exc.qualification | EptQual.LINEAR_VALID | extra_qualification
            raise EptViolation(exc.gpa, qualification, self._linear) from None


class NestedTranslator:
    """Translates guest linear addresses for one vCPU under EPT, counting what it costs.

    `eptp_source` is asked at every translation, so a VMCS write of the EPTP takes effect at the next miss,
    as it does after INVEPT on silicon. Counters are plain ints for the benchmark reports: `walks`
    (translations attempted), `references` (paging-structure entries read, guest and EPT; for a failed
    translation, the guest entries read and the EPT walks completed before the failure), `page_faults`,
    `violations`, `misconfigurations`.
    """

    def __init__(self, eptp_source: Callable[[], int], host: HostMemory, *, maxphyaddr: int = 40) -> None:
        self._eptp_source = eptp_source
        self._host = host
        self._maxphyaddr = maxphyaddr
        self._tables = _GuestTablesThroughEpt(host, maxphyaddr)
        self.walks = 0
        self.references = 0
        self.page_faults = 0
        self.violations = 0
        self.misconfigurations = 0

    def translate(self, regs: PagingRegs, linear: GVA, access: Access) -> NestedTranslation:
        """Walk the guest's tables through EPT, then translate the final GPA for `access`.

        Raises `PageFault` (to be reflected to the guest), or `EptViolation` / `EptMisconfiguration` (VM exits
        for the hypervisor). A violation on the final access has qualification bits 7 and 8 set and carries
        `linear`; one on a guest paging-structure entry has bit 7 only (Table 27-7).
        """
        eptp = self._eptp_source()
        tables = self._tables
        tables.start(eptp, linear)
        self.walks += 1
        try:
            guest = walk(regs, linear, access, tables, maxphyaddr=self._maxphyaddr)
        except (PageFault, EptViolation, EptMisconfiguration) as exc:
            self._count_failure(exc, tables.reads + tables.ept_references(tables.reads))
            raise
        guest_references = len(guest.entries) + tables.ept_references(len(guest.entries))
        final = self._translate_final(eptp, guest.gpa, access, linear, guest_references)
        self.references += guest_references + final.references
        return NestedTranslation(
            hpa=final.hpa,
            gpa=guest.gpa,
            page_size=min(guest.page_size, final.page_size),
            readable=guest.readable and final.readable,
            writable=guest.writable and final.writable,
            executable=guest.executable and final.executable,
            guest_dirty=guest.dirty,
            references=guest_references + final.references,
        )

    def _translate_final(
        self, eptp: int, gpa: GPA, access: Access, linear: GVA, guest_references: int
    ) -> EptTranslation:
        """EPT-translate the GPA the guest walk produced: the access to "the translation of a linear address"."""
        try:
            return ept_walk(eptp, gpa, access, self._host, maxphyaddr=self._maxphyaddr)
        except EptViolation as exc:
            self._count_failure(exc, guest_references)
            qualification = exc.qualification | EptQual.LINEAR_VALID | EptQual.LINEAR_TRANSLATION
            raise EptViolation(exc.gpa, qualification, linear) from None
        except EptMisconfiguration as exc:
            self._count_failure(exc, guest_references)
            raise

    def _count_failure(self, exc: Exception, references: int) -> None:
        self.references += references
        if isinstance(exc, PageFault):
            self.page_faults += 1
        elif isinstance(exc, EptViolation):
            self.violations += 1
        else:
            self.misconfigurations += 1
