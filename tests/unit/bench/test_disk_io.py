"""The disk I/O comparison (benchmarks/disk_io.py): one run of each mode, exit counts only
(they are deterministic; times are not asserted)."""

from __future__ import annotations

import pytest

from vtemu.bench.disk_io import DATA_KIB, format_table, measure


@pytest.mark.slow
def test_both_modes_move_the_data_and_the_channel_needs_few_exits() -> None:
    native, synthetic = measure(repeats=1)
    assert (native.mode, synthetic.mode) == ("vtx", "pv")
    assert native.exit_code == synthetic.exit_code == 0
    checksum_lines = [[line for line in run.output.split(b"\n") if b"checksum" in line]
                      for run in (native, synthetic)]
    assert checksum_lines[0] == checksum_lines[1] and len(checksum_lines[0]) == 3
    # pv: per data phase one storage signal and one console line, plus the POST code exits
    assert synthetic.data_exits == 4 * 2 + 4
    assert native.data_exits / DATA_KIB > 8
    assert "synthetic/emulated" in format_table([native, synthetic])
