"""QEMU isa-debug-exit (QEMU hw/misc/debugexit.c): lets a test guest end the run with a code.

Any write of value v to the device's I/O range (1 to iosize = 4 bytes wide, at any offset)
asks to end the run with v; reads return 0. QEMU itself calls exit((v << 1) | 1), so its
process status is ((v << 1) | 1) & 0xFF and can never be 0 (an odd status means "the guest
chose it"). vtemu passes v unchanged to `request_exit`, so `vtemu run` exits with v: a
differential test compares vtemu's v with (QEMU's status - 1) >> 1.
"""

from __future__ import annotations

from typing import Callable

VALUE_MASKS = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}


class IsaDebugExit:
    """The device only asks: ending the run is the hypervisor's decision, not the device's."""

    def __init__(self, request_exit: Callable[[int], None]) -> None:
        self._request_exit = request_exit
        self.last_value: int | None = None

    def io_read(self, offset: int, size: int) -> int:
        return 0

    def io_write(self, offset: int, size: int, value: int) -> None:
        value &= VALUE_MASKS.get(size, 0xFFFFFFFF)
        self.last_value = value
        self._request_exit(value)
