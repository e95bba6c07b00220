"""How a partition's memory is virtualized (`--paging`): nested paging (EPT) or shadow tables.

A scheme configures each vCPU's VMCS after the CPU mode has (modes/), may take over some
exit handlers, and reports its counters. Under both, the processor translates through what
the VMCS selects (vmx/cpu.py attach_paging): EPT (hv/memory.py NestedPaging) or, with EPT
off, the tables CR3 roots (mmu/direct.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import unicorn.x86_const as U

from vtemu.hv.shadow_paging import ShadowPaging, cr3_reserved_bits

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

    # --- what paravirtual requests (hv/hypercalls) ask of the memory scheme ------------------
    # Under EPT the guest owns CR3 and its TLB: a hypercall does what the instruction would.
    def load_guest_cr3(self, cpu: "VmxCpu", value: int) -> bool:
        """MOV to CR3 on the guest's behalf; False if the value has reserved bits set."""
        if cr3_reserved_bits(cpu, value):
            return False
        cpu.vcpu.write(U.UC_X86_REG_CR3, value)
        cpu.vcpu.flush_tlb()
        return True

    def invalidate_page(self, cpu: "VmxCpu", linear: int, refill: object = None) -> None:
        cpu.vcpu.flush_tlb()      # Unicorn's TLB flushes whole; INVLPG may flush more (SDM 4.10.4.1)

    def flush_guest_tlb(self, cpu: "VmxCpu") -> None:
        cpu.vcpu.flush_tlb()

    def guest_physical_map_changed(self) -> None:
        for cpu in self.partition.vcpus:
            cpu.vcpu.flush_tlb()

    def counter_values(self) -> dict[str, int]:
        units = [nested.nested for nested, _ in self.partition.paging_units]
        return {"walks": sum(u.walks for u in units),
                "walk_references": sum(u.references for u in units),
                "ept_violations": sum(u.violations for u in units)}


PAGING: dict[str, Callable[["Partition"], object]] = {
    "ept": NestedPagingScheme,
    "shadow": ShadowPaging,
}
