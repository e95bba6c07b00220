"""Paging-structure entries in host memory: 4- or 8-byte, naturally aligned, read and written
through the 64-bit host interface."""

from __future__ import annotations

from vtemu.machine.addr import HPA
from vtemu.mmu.ept import HostMemory


def load_entry(host: HostMemory, hpa: HPA, size: int) -> int:
    """A 4- or 8-byte entry through the 64-bit host interface (entries are naturally aligned)."""
    if size == 8:
        return host.read_u64(hpa)
    shift = (hpa & 4) * 8
    return (host.read_u64(HPA(hpa & ~7)) >> shift) & 0xFFFF_FFFF


def store_entry(host: HostMemory, hpa: HPA, size: int, value: int) -> None:
    """Store an entry; a 4-byte entry is merged into its 64-bit word, leaving the neighbour as it is."""
    if size == 8:
        host.write_u64(hpa, value)
        return
    word_hpa = HPA(hpa & ~7)
    shift = (hpa & 4) * 8
    word = host.read_u64(word_hpa) & ~(0xFFFF_FFFF << shift)
    host.write_u64(word_hpa, word | (value & 0xFFFF_FFFF) << shift)
