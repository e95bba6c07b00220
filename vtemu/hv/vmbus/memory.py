"""Guest RAM as the channel sees it: pages named by GPA, each checked before it is touched.

Every GPA the guest hands the channel (ring pages, message-ring pages, data buffers) goes
through `GuestRam.check_page`: it must be 4 KiB aligned (else HV_STATUS_INVALID_ALIGNMENT)
and lie in this partition's writable RAM (else HV_STATUS_INVALID_PARAMETER: the legacy
hole, ROM, or anything past the end of RAM), and not be a page the guest itself may not
write, such as the hypercall page overlay (else HV_STATUS_ACCESS_DENIED; checked again at
every write, as the overlay can appear after a ring was opened). The host then reads the
page from the partition's own host buffer, as a VSP reads a child partition's memory, and
writes it through the vCPUs (`write_host`), so translated code on the page and shadow page
tables derived from it hear of the write, as they would of a device's DMA.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Callable, Protocol

from vtemu.hv.memory import PartitionMemory
from vtemu.hv.vmbus.errors import HvStatus, VmbusError
from vtemu.machine.addr import HPA, PAGE_SIZE
from vtemu.mmu.ept import EptPerm


class GuestMemory(Protocol):
    def check_page(self, gpa: int) -> int: ...
    def read(self, gpa: int, length: int) -> bytes: ...
    def write(self, gpa: int, data: bytes) -> None: ...


class GuestRam:
    """A partition's RAM (not its ROM) for the VMBus host."""

    def __init__(self, memory: PartitionMemory,
                 writer: Callable[[int, bytes], None] | None = None,
                 read_only: Callable[[int], bool] = lambda gpa: False) -> None:
        self._memory = memory
        self._ram = [piece for piece in memory.ranges if piece.perms & EptPerm.W]
        self._writer = writer if writer is not None else memory.host.write
        self._read_only = read_only

    def check_page(self, gpa: int) -> int:
        """The GPA of a whole RAM page, or VmbusError with the status the guest gets."""
        if gpa % PAGE_SIZE:
            raise VmbusError(HvStatus.INVALID_ALIGNMENT, f"GPA {gpa:#x} is not page aligned")
        if not self._in_ram(gpa, PAGE_SIZE):
            raise VmbusError(HvStatus.INVALID_PARAMETER, f"GPA {gpa:#x} is not RAM of this partition")
        self._check_writable(gpa)
        return gpa

    def _check_writable(self, gpa: int) -> None:
        if self._read_only(gpa):
            raise VmbusError(HvStatus.ACCESS_DENIED, f"GPA {gpa:#x} is not writable by the guest")

    def _in_ram(self, gpa: int, length: int) -> bool:
        return any(piece.gpa <= gpa and gpa + length <= piece.gpa + piece.size for piece in self._ram)

    def _hpa(self, gpa: int, length: int) -> HPA:
        if not self._in_ram(gpa, length):
            raise VmbusError(HvStatus.INVALID_PARAMETER, f"GPA {gpa:#x}+{length} is not RAM")
        hpa = self._memory.gpa_to_hpa(gpa, length)
        assert hpa is not None
        return HPA(hpa)

    def read(self, gpa: int, length: int) -> bytes:
        return self._memory.host.read(self._hpa(gpa, length), length)

    def write(self, gpa: int, data: bytes) -> None:
        hpa = self._hpa(gpa, len(data))
        self._check_writable(gpa)
        self._check_writable(gpa + len(data) - 1)
        self._writer(hpa, data)


def page_runs(pages: list[int], offset: int, length: int) -> Iterator[tuple[int, int]]:
    """(GPA, length) runs covering `length` bytes from byte `offset` of the concatenation of
    `pages` (page GPAs), which the caller has checked is long enough."""
    while length:
        page, within = divmod(offset, PAGE_SIZE)
        run = min(length, PAGE_SIZE - within)
        yield pages[page] + within, run
        offset += run
        length -= run
