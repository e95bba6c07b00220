"""Record and replay of COM1 input: a replay reproduces the recorded run exit for exit, from a
pipe, from a terminal (polled without waiting, so its timing is the nondeterminism a log
captures), and through the command line; bad logs and option mixes are one-line errors."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pytest

from tests.guests.harness import GUEST_INPUT, bytes_input, run_guest
from vtemu.cli import main
from vtemu.hv.input_log import InputLog, RecordingInput, ReplayInput, partition_position
from vtemu.hv.outcome import RunEnd
from vtemu.hv.serial_input import SerialInput

GUESTS = Path(__file__).resolve().parents[2] / "guests"
ECHO = str(GUESTS / "echo.S")
TYPED = b"first\nSecond line\nquit\n"


def _positioned(source):
    return lambda partition: setattr(source, "position", partition_position(partition))


def test_a_replay_reproduces_the_recorded_exit_sequence() -> None:
    recorder = RecordingInput(bytes_input(GUEST_INPUT["echo"]))
    recorded = run_guest("echo", rx_source=recorder, before_run=_positioned(recorder))
    log = InputLog.from_json(json.loads(json.dumps(recorder.log.to_json())))   # through the format
    replay = ReplayInput(log)
    replayed = run_guest("echo", rx_source=replay, before_run=_positioned(replay))
    assert recorded.exit_code == replayed.exit_code == 3
    assert replayed.serial == recorded.serial
    assert replayed.exit_signature() == recorded.exit_signature()
    assert [r.out_value for r in replayed.exits] == [r.out_value for r in recorded.exits]
    assert replay.finished and bytes(log.received) == GUEST_INPUT["echo"]


def test_terminal_input_polled_without_waiting_replays_exactly() -> None:
    """A pseudo-terminal is interactive: the UART's polls find nothing until the 'typist' (a
    thread with pauses) has typed, so where bytes land depends on host timing. The log fixes it."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    source = SerialInput(slave)
    assert source.interactive
    deadline = time.monotonic() + 60
    source.cancelled = lambda: time.monotonic() > deadline   # never hang the suite on a wait

    def typist() -> None:
        for line in TYPED.splitlines(keepends=True):
            time.sleep(0.05)
            os.write(master, line)

    writer = threading.Thread(target=typist)
    writer.start()
    recorder = RecordingInput(source)
    try:
        recorded = run_guest("echo", rx_source=recorder, before_run=_positioned(recorder))
    finally:
        writer.join()
        os.close(master)
        os.close(slave)
    assert recorded.serial.endswith(b"> FIRST\n> SECOND LINE\n> QUIT\necho: 3 lines\n")
    replay = ReplayInput(recorder.log)
    replayed = run_guest("echo", rx_source=replay, before_run=_positioned(replay))
    assert replayed.serial == recorded.serial
    assert replayed.exit_signature() == recorded.exit_signature()


def test_replaying_against_another_run_stops_with_a_clear_error() -> None:
    recorder = RecordingInput(bytes_input(b"abc\nquit\n"))
    run_guest("echo", rx_source=recorder, before_run=_positioned(recorder))
    log = recorder.log
    log.at = [(exits + 1, instructions) for exits, instructions in log.at]   # as if another image
    replay = ReplayInput(log, "log.json")
    with pytest.raises(Exception, match="log.json: the run diverged from the recording at input byte 0"):
        run_guest("echo", rx_source=replay, before_run=_positioned(replay))


def _trace_signature(path: Path) -> list[tuple]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["seq"], r["reason"], r["rip"], r["qualification"], r["instructions"], r["payload"])
            for r in rows]


def test_record_from_stdin_then_replay_on_the_command_line(capsys, tmp_path) -> None:
    log = tmp_path / "input.json"
    recorded = subprocess.run([sys.executable, "-m", "vtemu.cli", "trace", ECHO, "--serial-in", "-",
                               "--record", str(log), "--jsonl", "-o", str(tmp_path / "recorded.jsonl")],
                              input=TYPED, capture_output=True, timeout=120)
    assert recorded.returncode == 3, recorded.stderr
    assert recorded.stdout.endswith(b"> FIRST\n> SECOND LINE\n> QUIT\necho: 3 lines\n")
    data = json.loads(log.read_text())
    assert data["format"] == "vtemu-input-log" and data["version"] == 1
    code = main(["trace", ECHO, "--replay", str(log), "--jsonl", "-o", str(tmp_path / "replayed.jsonl")])
    out = capsys.readouterr().out
    assert code == 3 and out.encode() == recorded.stdout
    assert _trace_signature(tmp_path / "replayed.jsonl") == _trace_signature(tmp_path / "recorded.jsonl")


def _error(capsys, *argv: str) -> str:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == RunEnd.BAD_INPUT and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_missing_and_corrupt_replay_logs_are_one_line(capsys, tmp_path) -> None:
    assert "no such file" in _error(capsys, "run", ECHO, "--replay", str(tmp_path / "missing.json"))
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"format": "vtemu-input-log", "version": 1, "received": 5')
    assert "not a vtemu input log" in _error(capsys, "run", ECHO, "--replay", str(corrupt))
    newer = tmp_path / "newer.json"
    newer.write_text('{"format": "vtemu-input-log", "version": 9}')
    assert "version 9" in _error(capsys, "run", ECHO, "--replay", str(newer))


def test_record_and_replay_option_mistakes_are_one_line(capsys, tmp_path) -> None:
    log = tmp_path / "log.json"
    assert "--record needs --serial-in" in _error(capsys, "run", ECHO, "--record", str(log))
    typed = tmp_path / "typed.txt"
    typed.write_bytes(TYPED)
    assert "no such file" in _error(capsys, "run", ECHO, "--serial-in", str(typed),
                                    "--record", str(tmp_path / "missing" / "log.json"))
    log.write_text("{}")
    assert "cannot be combined" in _error(capsys, "run", ECHO, "--replay", str(log),
                                          "--serial-in", str(typed))


def test_record_from_a_file_and_replay_with_run(capsys, tmp_path) -> None:
    typed, log = tmp_path / "typed.txt", tmp_path / "log.json"
    typed.write_bytes(TYPED)
    assert main(["run", ECHO, "--serial-in", str(typed), "--record", str(log)]) == 3
    first = capsys.readouterr().out
    assert main(["run", ECHO, "--replay", str(log)]) == 3
    assert capsys.readouterr().out == first


def test_a_diverging_replay_is_one_line_on_the_command_line(capsys, tmp_path) -> None:
    typed, log = tmp_path / "typed.txt", tmp_path / "log.json"
    typed.write_bytes(TYPED)
    main(["run", ECHO, "--serial-in", str(typed), "--record", str(log)])
    capsys.readouterr()
    data = json.loads(log.read_text())
    data["at"][1][0] += 3                     # as if recorded from another image
    log.write_text(json.dumps(data))
    code = main(["run", ECHO, "--replay", str(log)])
    err = capsys.readouterr().err
    assert code == RunEnd.BAD_INPUT and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "diverged from the recording at input byte 1" in err
