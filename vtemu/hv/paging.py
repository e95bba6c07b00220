"""How a partition's memory is virtualized (`--paging`): nested paging (EPT) or shadow tables.

A scheme configures each vCPU's VMCS after the CPU mode has (modes/), may take over some
exit handlers, and reports its counters. Under both, the processor translates through what
the VMCS selects (vmx/cpu.py attach_paging): EPT (hv/memory.py NestedPaging) or, with EPT
off, the tables CR3 roots (mmu/direct.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from vtemu.hv.shadow_paging import ShadowPaging

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu


class NestedPagingScheme:
    """`--paging ept` (the default): the mode's VMCS already enables EPT; nothing to add."""

    name = "ept"

    def __init__(self, partition: "Partition") -> None:
        self.partition = partition

    def configure(self, cpu: "VmxCpu") -> None:
        return None

    def handlers(self) -> dict:
        return {}

    def counter_values(self) -> dict[str, int]:
        units = [nested.nested for nested, _ in self.partition.paging_units]
        return {"walks": sum(u.walks for u in units),
                "walk_references": sum(u.references for u in units),
                "ept_violations": sum(u.violations for u in units)}


PAGING: dict[str, Callable[["Partition"], object]] = {
    "ept": NestedPagingScheme,
    "shadow": ShadowPaging,
}
