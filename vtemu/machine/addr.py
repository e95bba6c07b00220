"""Distinct address types, so a function's signature states which translation it performs.

GVA: guest-virtual (linear) address, what guest instructions compute.
GPA: guest-physical address, what the guest's page tables produce.
HPA: host-physical address, what the vCPU (Unicorn's physical space) really accesses;
     only the hypervisor's second-level translation (EPT or shadow) produces these.
"""

from typing import NewType

GVA = NewType("GVA", int)
GPA = NewType("GPA", int)
HPA = NewType("HPA", int)

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)


def page_base(address: int) -> int:
    return address & PAGE_MASK


def page_offset(address: int) -> int:
    return address & (PAGE_SIZE - 1)
