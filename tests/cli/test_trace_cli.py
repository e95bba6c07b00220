"""`vtemu trace`: the same boot as `vtemu run`, a trace file of its exits, filters, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vtemu.cli import main
from vtemu.debug.trace_export import read_jsonl
from vtemu.hv.outcome import RunEnd
from vtemu.vmx.reasons import ExitReason

GUESTS = Path(__file__).resolve().parents[2] / "guests"
HELLO = str(GUESTS / "hello.S")
TICK = str(GUESTS / "tick.S")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_trace_runs_the_guest_and_writes_chrome_json(capsys, tmp_path) -> None:
    out_file = tmp_path / "hello.json"
    code, out, err = _run(capsys, "trace", HELLO, "-o", str(out_file))
    assert (code, out, err) == (0, "Hello from a vtemu guest!\n", "")
    trace = json.loads(out_file.read_text())
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(slices) == 92 and {e["name"] for e in slices} == {"IO_INSTRUCTION"}
    assert all({"ts", "dur", "pid", "tid", "args"} <= set(e) for e in slices)
    assert [e["args"]["seq"] for e in slices] == list(range(92))
    last = slices[-1]["args"]
    assert (last["port"], last["direction"]) == ("0xf4", "out")     # isa-debug-exit ends it
    assert any(e["ph"] == "C" for e in trace["traceEvents"])


def test_trace_jsonl_with_reason_and_payload_filters(capsys, tmp_path) -> None:
    out_file = tmp_path / "tick.jsonl"
    code, out, _ = _run(capsys, "trace", TICK, "-o", str(out_file), "--jsonl",
                        "--filter", "io,ext", "port=0x3f8")
    assert code == 0 and out.endswith("50 ticks\n")
    records = read_jsonl(out_file)
    assert records and {r.reason for r in records} == {ExitReason.IO_INSTRUCTION}
    assert {r.payload_dict()["port"] for r in records} == {0x3F8}
    text = bytes(r.payload_dict()["value"] for r in records if r.payload_dict()["direction"] == "out")
    assert text.decode().endswith("50 ticks\n")          # every byte the guest printed, in order


def test_trace_filter_by_sdm_name_keeps_only_that_reason(capsys, tmp_path) -> None:
    out_file = tmp_path / "tick.jsonl"
    assert _run(capsys, "trace", TICK, "-o", str(out_file), "--jsonl",
                "--filter", "EXTERNAL_INTERRUPT")[0] == 0
    records = read_jsonl(out_file)
    assert len(records) == 50
    assert {r.payload_dict()["vector"] for r in records} == {0x20}


def test_trace_and_run_see_the_same_exits(capsys, tmp_path) -> None:
    out_file = tmp_path / "tick.jsonl"
    _run(capsys, "trace", TICK, "-o", str(out_file), "--jsonl")
    code, _, err = _run(capsys, "run", TICK, "--stats", "--json")
    exits = json.loads(err)[0]["summary"]["exits"]
    assert len(read_jsonl(out_file)) == exits


def test_unknown_filter_name_is_one_line(capsys, tmp_path) -> None:
    code, out, err = _run(capsys, "trace", HELLO, "-o", str(tmp_path / "t.json"), "--filter", "io,bogus")
    assert code == RunEnd.BAD_INPUT and out == ""
    assert "unknown exit reason 'bogus'" in _one_line(err)
    assert not (tmp_path / "t.json").exists()          # nothing ran, nothing written


def test_unknown_payload_field_is_one_line(capsys, tmp_path) -> None:
    code, out, err = _run(capsys, "trace", HELLO, "-o", str(tmp_path / "t.json"), "colour=red")
    assert code == RunEnd.BAD_INPUT and out == ""
    assert "unknown filter field 'colour'" in _one_line(err)


def test_unwritable_trace_file_is_one_line_before_the_guest_runs(capsys, tmp_path) -> None:
    code, out, err = _run(capsys, "trace", HELLO, "-o", str(tmp_path / "missing" / "t.json"))
    assert code == RunEnd.BAD_INPUT and out == ""
    assert "no such file" in _one_line(err)


def test_trace_needs_an_output(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["trace", HELLO])
    assert exited.value.code == 2
    assert "-o" in capsys.readouterr().err
