"""Code pages shared by the vCPUs of one partition: cross-processor self-modifying code.

Each vCPU is its own Unicorn engine with its own translated blocks, TLB and sites
(sites.py), all derived from guest RAM that every vCPU of the partition shares. Within one
vCPU, W^X in its TLB catches writes to code it scanned. Across vCPUs nothing would: a
store by vCPU A to a page vCPU B executes changes no state of B's engine, and B would go on
running the old code with the old sites (and miss a sensitive instruction planted there).

Real processors keep instruction caches coherent with stores from any processor (SDM Vol.
3A 8.1.3 "Handling Self- and Cross-Modifying Code"; software still needs a serializing
instruction on the executing processor before running the new code, which every guest
that patches code for another processor does, e.g. by waiting on a flag with a locked
operation). vtemu keeps the same coherence with one registry per partition:

* a fetch fill on a page makes that vCPU an executor of the page, and takes write
  permission for the page away from every other vCPU's TLB (their whole TLB is flushed,
  which is rare: only when a page another vCPU may write becomes code);
* a write fill by any vCPU on a page others execute (or a VMM or device write) makes each
  of those drop its translated blocks and TLB and rescan the page at its next fetch; it is
  then no longer an executor until it fetches from the page again.

With one vCPU the registry has a single member and changes nothing.
"""

from __future__ import annotations

from typing import Protocol


class CodeHolder(Protocol):
    """A vCPU as the registry sees it."""

    def revoke_write(self, hpa_page: int) -> None:
        """Stop allowing writes to the page without a TLB fill."""

    def code_page_written(self, hpa_page: int) -> None:
        """Someone else wrote the page: drop what was derived from it."""


class SharedCodePages:
    """Which members executed code from each host page since they last heard it changed."""

    def __init__(self) -> None:
        self.members: list[CodeHolder] = []
        self._executors: dict[int, list[CodeHolder]] = {}
        self.cross_writes = 0          # times a member's code was invalidated by another's write

    def join(self, member: CodeHolder) -> None:
        self.members.append(member)

    def executing(self, member: CodeHolder, hpa_page: int) -> None:
        """`member` fetched from the page: from now on no other member writes it unseen."""
        holders = self._executors.setdefault(hpa_page, [])
        if member not in holders:
            holders.append(member)
        for other in self.members:
            if other is not member:
                other.revoke_write(hpa_page)

    def is_code(self, hpa_page: int) -> bool:
        return hpa_page in self._executors

    def written(self, writer: CodeHolder | None, hpa_page: int) -> None:
        """The page was written by `writer` (None: a device or the VMM on nobody's behalf)."""
        holders = self._executors.get(hpa_page)
        if not holders:
            return
        for holder in [h for h in holders if h is not writer]:
            holders.remove(holder)
            self.cross_writes += 1
            holder.code_page_written(hpa_page)
        if not holders:
            del self._executors[hpa_page]
