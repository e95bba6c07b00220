"""pgfault: demand paging in long mode; every page of a 16 MiB region faults in exactly once."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow   # 4096 #PF deliveries: a few seconds under vtemu

EXPECTED = (
    b"pgfault: 16 MiB at 0x40000000, not present; #PF maps frames from 32 MiB\n"
    b"touched 4096 pages (1366 read first, 2730 written first)\n"
    b"faults 4096\n"
    b"frames allocated 4105\n"          # 4096 data pages, 1 page directory, 8 page tables
    b"checksum e3a45a6e9c4ec0ad\n"
    b"pgfault done\n"
)


def test_serial_and_exit_status(boot) -> None:
    run = boot("pgfault")
    assert run.serial == EXPECTED
    assert run.exit_code == 0
