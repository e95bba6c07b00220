"""Ring compression: the descriptor tables the processor really uses while a deprivileged
guest kernel runs, and where they live.

The VMM owns the top 4 MiB of the linear address space (FFC00000h-FFFFFFFFh), as VMware's
monitor did: a window the guest has no guest-physical address for, served from host memory
(like the binary translator's window, modes/bt/region.py). Guest segments are truncated so
that they end below it, so a guest access to the window faults (#GP) before paging is asked.

Layout of the window:
    +00000h  shadow GDT: the guest's GDT with ring 0 compressed to ring 1 (8192 entries)
    +10000h  shadow IDT: the guest's gates as it wrote them
    +11000h  the VMM's own 32-bit TSS (ring-1 stack = the guest's ring-0 stack)

Compression (SDM Vol. 3A 3.4.5, Figure 3-8): a code or data descriptor with DPL 0 gets
DPL 1, so the guest kernel's own selectors load at CPL 1; every code or data segment that
reaches into the window gets its limit cut to end below it (VMware's segment truncation).
System descriptors (TSS, LDT, gates) are copied as they are; a segment that cannot end below
the window (expand-down, or based in it) is marked not present.
"""

from __future__ import annotations

WINDOW_BASE = 0xFFC0_0000
WINDOW_SIZE = 4 * 1024 * 1024
GDT_OFFSET = 0x0_0000
GDT_LIMIT = 0xFFFF                   # 8192 descriptors: the architectural maximum
IDT_OFFSET = 0x1_0000
TSS_OFFSET = 0x1_1000
TSS_LIMIT = 103                      # a 32-bit TSS without an I/O bitmap (SDM Figure 7-2)
VMM_TSS_SELECTOR = 0xFFF8            # the last GDT slot: the VMM's TSS descriptor
TSS_ESP1, TSS_SS1 = 12, 16           # ring-1 stack fields of a 32-bit TSS (SDM Figure 7-2)
TSS_ESP0, TSS_SS0 = 4, 8
TSS_IOMAP = 0x66

DESC_S = 1 << 44
DESC_DPL_SHIFT = 45
DESC_DPL = 3 << DESC_DPL_SHIFT
DESC_G = 1 << 55
DESC_P = 1 << 47
CODE_TYPE = 1 << 43                  # type bit 3: code (S = 1)
EXPAND_DOWN = 1 << 42                # type bit 2 of a data segment
TSS32_BUSY = 0xB


def window_linear(offset: int) -> int:
    return WINDOW_BASE + offset


def in_window(linear: int) -> bool:
    return WINDOW_BASE <= linear < WINDOW_BASE + WINDOW_SIZE


def descriptor_base(raw: int) -> int:
    return ((raw >> 16) & 0xFFFFFF) | (((raw >> 56) & 0xFF) << 24)


def descriptor_limit(raw: int) -> int:
    """The limit in bytes (granularity applied)."""
    limit = (raw & 0xFFFF) | (((raw >> 48) & 0xF) << 16)
    return (limit << 12) | 0xFFF if raw & DESC_G else limit


def _with_limit(raw: int, limit: int) -> int:
    """`raw` with its 20-bit limit field set to `limit` (in the descriptor's own units)."""
    raw &= ~(0xFFFF | (0xF << 48))
    return raw | (limit & 0xFFFF) | (((limit >> 16) & 0xF) << 48)


def truncate(raw: int) -> int:
    """Cut a code/data segment so its last byte lies below the VMM window. One that cannot
    be cut (expand-down, which always reaches the top of the space, or one based inside the
    window) is marked not present: loading it faults (#NP), and the guest's handler sees it."""
    if not raw & DESC_S:
        return raw
    base = descriptor_base(raw)
    if (not raw & CODE_TYPE and raw & EXPAND_DOWN) or base >= WINDOW_BASE:
        return raw & ~DESC_P
    if base + descriptor_limit(raw) < WINDOW_BASE:
        return raw
    room = WINDOW_BASE - base                      # bytes the segment may still span
    units = (room >> 12) - 1 if raw & DESC_G else room - 1
    return _with_limit(raw, units)


def compress(raw: int) -> int:
    """The shadow copy of one guest descriptor: ring 0 becomes ring 1, segments end below the
    window. Not-present and system descriptors keep their privilege."""
    if not raw & DESC_S:
        return raw
    if (raw & DESC_DPL) == 0:
        raw |= 1 << DESC_DPL_SHIFT
    return truncate(raw)


def shadow_gdt(guest: bytes) -> bytes:
    """The shadow table's first len(guest) bytes: every descriptor compressed."""
    whole = len(guest) - len(guest) % 8
    out = bytearray()
    for offset in range(0, whole, 8):
        out += compress(int.from_bytes(guest[offset:offset + 8], "little")).to_bytes(8, "little")
    return bytes(out)


def tss_descriptor(base: int, limit: int, busy: bool = True) -> int:
    """A present, DPL 0, 32-bit TSS descriptor (SDM Figure 7-3)."""
    kind = TSS32_BUSY if busy else 0x9
    raw = (limit & 0xFFFF) | ((base & 0xFFFFFF) << 16)
    raw |= (kind << 40) | DESC_P | (((limit >> 16) & 0xF) << 48) | (((base >> 24) & 0xFF) << 56)
    return raw


def vmm_tss(esp1: int, ss1: int) -> bytes:
    """The VMM's TSS: only the ring-1 stack is used (privilege changes from the guest's user
    code land on the guest kernel's stack, now at ring 1); no I/O bitmap, so every port
    access at CPL 1 faults (SDM Vol. 1 18.5)."""
    tss = bytearray(TSS_LIMIT + 1)
    tss[TSS_ESP1:TSS_ESP1 + 4] = (esp1 & 0xFFFFFFFF).to_bytes(4, "little")
    tss[TSS_SS1:TSS_SS1 + 2] = (ss1 & 0xFFFF).to_bytes(2, "little")
    tss[TSS_IOMAP:TSS_IOMAP + 2] = (TSS_LIMIT + 1).to_bytes(2, "little")
    return bytes(tss)
