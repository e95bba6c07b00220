"""Where the binary translator lives in the guest's linear address space.

The translation cache (TC) and the translator's data sit in the top 4 MiB of the linear
address space (FFC00000h-FFFFFFFFh in 32-bit code, the same window at the top of the
canonical space in 64-bit code), which the hypervisor reserves as VMware's monitor did.
Fills there are served by the engine (machine/translation.py Overlay), never by the guest's
page tables, from host memory no guest-physical address reaches. Addresses in the window
fit a sign-extended 32-bit displacement, so the same `[disp32]` operands reach the data
from 32-bit and 64-bit translated code, and relative branches from the TC reach guest code
in the low half of the address space.

Layout of the window (per vCPU: the data and stack pages; shared: lookup table and code):
    +0000h  data page: the fields below
    +1000h  the translator's stack page (flags saved during an indirect-branch lookup)
    +2000h  indirect-branch lookup table: TABLE_ENTRIES x (guest address, TC address)
    +10000h translated code
"""

from __future__ import annotations

from vtemu.machine.decode import CodeMode

WINDOW_SIZE = 4 * 1024 * 1024
WINDOW_32 = 0xFFC0_0000
WINDOW_64 = 0xFFFF_FFFF_FFC0_0000

DATA = 0x0000
STACK = 0x1000
STACK_TOP = 0x2000
TABLE = 0x2000
TABLE_ENTRIES = 2048                 # 16 bytes each: 32 KiB
CODE = 0x10000

# Fields of the data page (byte offsets).
TARGET = 0x00          # guest address an indirect branch goes to
SAVED_RSP = 0x08
JUMP = 0x10            # TC address the lookup found
VTPR = 0x18            # the guest's CR8 (virtual TPR)
GUEST_CR0 = 0x20       # CR0 and CR4 as the guest reads them (host-owned bits from shadows)
GUEST_CR4 = 0x28
LOOKUP_HITS = 0x30     # indirect branches the inline table resolved (the stub counts them)


def window(mode: CodeMode) -> int:
    return WINDOW_64 if mode is CodeMode.BITS64 else WINDOW_32


def disp32(linear: int) -> int:
    """The 32-bit displacement that names `linear` in the window (sign-extended in 64-bit code)."""
    return linear & 0xFFFF_FFFF


def in_window(linear: int, mode: CodeMode) -> bool:
    base = window(mode)
    return base <= linear < base + WINDOW_SIZE
