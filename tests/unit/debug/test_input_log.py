"""COM1 input logs (vtemu/hv/input_log.py): recording every pull result, replaying them in order,
the versioned file format, and one-line errors for files that are not logs."""

from __future__ import annotations

import json

import pytest

from vtemu.errors import BadInput
from vtemu.hv.input_log import FORMAT, VERSION, InputLog, RecordingInput, ReplayDiverged, ReplayInput

PULLS = [None, None, ord("h"), ord("i"), None, ord("\n"), None, None, None]


def _scripted(results: list[int | None]):
    remaining = iter(results)
    return lambda block: next(remaining, None)


def _record(results: list[int | None]) -> InputLog:
    exits = iter(range(100, 200))
    recorder = RecordingInput(_scripted(results))
    recorder.position = lambda: (next(exits), 7)
    assert [recorder(False) for _ in results] == results
    return recorder.log


def test_recording_keeps_bytes_gaps_and_positions() -> None:
    log = _record(PULLS)
    assert log.received == b"hi\n"
    assert log.empty_pulls == {0: 2, 2: 1, 3: 3}
    assert log.at == [(100, 7), (101, 7), (102, 7)]
    assert log.pulls == len(PULLS)


def test_replay_gives_the_same_pull_results_then_nothing() -> None:
    replay = ReplayInput(_record(PULLS))
    assert [replay(block=False) for _ in PULLS] == PULLS
    assert replay.finished
    assert [replay(True) for _ in range(3)] == [None, None, None]


def test_a_blocking_pull_replays_like_any_other() -> None:
    replay = ReplayInput(_record([ord("a"), None]))
    assert replay(True) == ord("a") and replay(True) is None


def test_the_file_round_trips_and_is_versioned(tmp_path) -> None:
    log = _record(PULLS)
    log.source = "terminal"
    path = tmp_path / "input.json"
    with open(path, "w") as stream:
        log.save(stream)
    data = json.loads(path.read_text())
    assert (data["format"], data["version"], data["device"]) == (FORMAT, VERSION, "com1")
    assert data["received"] == "aGkK"                       # base64 of b"hi\n"
    assert data["empty_pulls"] == [[0, 2], [2, 1], [3, 3]]
    assert InputLog.load(str(path)) == log


def test_replay_checks_each_byte_arrives_after_the_recorded_exit_count() -> None:
    log = _record(PULLS)
    replay = ReplayInput(log, "input.json")
    replay.position = lambda: (100, 0)     # the first byte: recorded after 100 exits too
    assert [replay(False) for _ in range(3)] == [None, None, ord("h")]
    with pytest.raises(ReplayDiverged, match=r"input.json: .*byte 1 \(recorded after 101 VM exits, replayed after 100\)"):
        replay(False)


@pytest.mark.parametrize("text, message", [
    ("not json", "not JSON"),
    ('{"format": "something-else", "version": 1}', "not a vtemu input log"),
    ('[1, 2]', "not a vtemu input log"),
    (f'{{"format": "{FORMAT}", "version": 2}}', "version 2"),
    (f'{{"format": "{FORMAT}", "version": 1, "received": "***"}}', "not base64"),
    (f'{{"format": "{FORMAT}", "version": 1, "received": "aGk=", "empty_pulls": [[5, 1]]}}', "empty_pulls"),
    (f'{{"format": "{FORMAT}", "version": 1, "received": "aGk=", "empty_pulls": [[0, 0]]}}', "empty_pulls"),
    (f'{{"format": "{FORMAT}", "version": 1, "received": "aGk=", "at": [[1, 2]]}}', "one .* pair per byte"),
])
def test_corrupt_logs_are_bad_input_in_one_line(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(BadInput, match=message) as caught:
        InputLog.load(str(path))
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_a_missing_or_binary_log_is_bad_input(tmp_path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        InputLog.load(str(tmp_path / "missing.json"))
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BadInput, match="not a vtemu input log"):
        InputLog.load(str(binary))


def test_a_log_without_positions_replays_unchecked() -> None:
    log = InputLog.from_json({"format": FORMAT, "version": 1, "received": "YQ=="})
    replay = ReplayInput(log)
    replay.position = lambda: (999, 0)
    assert log.at is None and replay(False) == ord("a")
