"""QEMU isa-debug-exit: any write asks to end the run with the value written."""

from __future__ import annotations

import pytest

from vtemu.devices.isa_debug_exit import IsaDebugExit


@pytest.mark.parametrize("offset, size, value, expected", [
    (0, 1, 0x01, 0x01),
    (0, 2, 0x1234, 0x1234),
    (0, 4, 0xDEADBEEF, 0xDEADBEEF),
    (2, 1, 0x1FF, 0xFF),                         # any offset in the range; masked to the width
])
def test_write_requests_exit_with_the_value(offset: int, size: int, value: int, expected: int) -> None:
    requests: list[int] = []
    device = IsaDebugExit(requests.append)
    device.io_write(offset, size, value)
    assert requests == [expected]
    assert device.last_value == expected


def test_reads_return_zero_and_request_nothing() -> None:
    requests: list[int] = []
    device = IsaDebugExit(requests.append)
    assert device.io_read(0, 4) == 0
    assert device.io_read(3, 1) == 0
    assert requests == [] and device.last_value is None
