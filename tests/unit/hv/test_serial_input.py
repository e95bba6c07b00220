"""The host end of COM1's input: files and pipes are waited on (so a run never depends on
when the writer delivers), bytes come one at a time, end of input is None for good."""

from __future__ import annotations

import os
import threading
import time

import pytest

from vtemu.errors import BadInput
from vtemu.hv.serial_input import SerialInput, open_serial_input


def test_a_file_is_read_byte_by_byte_then_ends(tmp_path) -> None:
    path = tmp_path / "input.txt"
    path.write_bytes(b"hi\n")
    with open_serial_input(str(path)) as source:
        assert source is not None and not source.interactive
        assert [source(False) for _ in range(5)] == [ord("h"), ord("i"), ord("\n"), None, None]


def test_a_pipe_is_waited_on_even_when_not_asked_to_block() -> None:
    read_end, write_end = os.pipe()

    def slow_writer() -> None:
        time.sleep(0.2)
        os.write(write_end, b"z")
        os.close(write_end)

    writer = threading.Thread(target=slow_writer)
    writer.start()
    source = SerialInput(read_end)
    assert source(False) == ord("z")       # waited for the writer: no timing-dependent None
    assert source(False) is None
    writer.join()
    os.close(read_end)


def test_a_cancelled_run_stops_waiting() -> None:
    read_end, write_end = os.pipe()
    source = SerialInput(read_end)
    source.cancelled = lambda: True
    assert source(True) is None
    os.close(read_end)
    os.close(write_end)


def test_no_path_means_no_input_and_a_missing_file_is_bad_input(tmp_path) -> None:
    with open_serial_input(None) as source:
        assert source is None
    with pytest.raises(BadInput, match="no such file"):
        with open_serial_input(str(tmp_path / "missing")):
            pass
