"""The PC/AT POST diagnostic port at 80h (QEMU's ioport80 in hw/i386/pc.c).

Firmware writes progress codes here and many kernels write to it only as an I/O delay, so it
must be cheap and must not grow without bound: the history is a short ring, and the counts
are bounded by the 256 possible codes.

Reads return 0xFF, as QEMU's ioport80_read() does (a POST card only listens; nothing drives
the bus on a read). Some chipsets latch the last code instead; QEMU's choice keeps vtemu and
QEMU guest-indistinguishable. The port is byte-wide: a wider write at 80h delivers only its
low byte here (the other bytes belong to ports 81h and up).
"""

from __future__ import annotations

from collections import Counter, deque

from vtemu.devices.bus import ALL_ONES

HISTORY_LENGTH = 256


class PostPort:
    def __init__(self) -> None:
        self.history: deque[int] = deque(maxlen=HISTORY_LENGTH)   # newest last
        self.counts: Counter[int] = Counter()
        self.writes = 0

    @property
    def last_code(self) -> int | None:
        """The last POST code written, or None before the first write."""
        return self.history[-1] if self.history else None

    def io_read(self, offset: int, size: int) -> int:
        return ALL_ONES[size]

    def io_write(self, offset: int, size: int, value: int) -> None:
        code = value & 0xFF
        self.history.append(code)
        self.counts[code] += 1
        self.writes += 1
