"""Trace files: JSONL reads back into the same records; Chrome trace-event JSON is valid and
has one complete event per exit on a track per vCPU, counters and track names."""

from __future__ import annotations

import io as text_io
import json

import pytest

from tests.unit.debug.helpers import io, rig_with_port, take
from vtemu.debug.trace import TraceRecord, TraceSession
from vtemu.debug.trace_export import (ChromeTraceWriter, JsonlWriter, read_jsonl, record_dict,
                                      record_from_dict, write_records)
from vtemu.errors import BadInput
from vtemu.vmx.qualifications import IoDirection
from vtemu.vmx.reasons import ExitReason


def _records() -> list[TraceRecord]:
    rig, _ = rig_with_port(reads=[0x61])
    session = TraceSession([rig.partition])
    io(rig, IoDirection.OUT, size=2, rax=0x1234)
    io(rig, IoDirection.IN)
    take(rig, ExitReason.CPUID, "cpuid", rax=1)
    take(rig, ExitReason.RDMSR, "rdmsr", rcx=0xC0000080)
    take(rig, ExitReason.HLT, "hlt", rflags=0x2)
    return session.records()


def test_jsonl_round_trip(tmp_path) -> None:
    records = _records()
    path = tmp_path / "trace.jsonl"
    write_records(records, path, jsonl=True)
    lines = path.read_text().splitlines()
    assert len(lines) == len(records)
    assert read_jsonl(path) == records
    first = json.loads(lines[0])
    assert first["reason"] == "IO_INSTRUCTION" and first["number"] == 30
    assert first["payload"] == {"port": 0x500, "size": 2, "direction": "out", "string": False,
                                "rep": False, "value": 0x1234}
    assert first["decoded"] == {"size": 2, "direction": "OUT", "string": False, "rep": False,
                                "immediate": False, "port": 0x500}


def test_every_record_survives_its_dict() -> None:
    for record in _records():
        assert record_from_dict(json.loads(json.dumps(record_dict(record)))) == record


def test_a_corrupt_jsonl_line_is_bad_input(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"reason": "NOPE"}\n')
    with pytest.raises(BadInput, match="bad.jsonl:1"):
        read_jsonl(path)


def _chrome(records: list[TraceRecord]) -> dict:
    out = text_io.StringIO()
    writer = ChromeTraceWriter(out, {0: "guest"})
    writer.write(records[:2])        # in chunks, as a session flushes them
    writer.write(records[2:])
    out.close = lambda: None         # keep the text readable after the writer closes it
    writer.close()
    return json.loads(out.getvalue())


def test_chrome_trace_has_a_complete_event_per_exit() -> None:
    records = _records()
    trace = _chrome(records)
    events = trace["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    assert len(slices) == len(records)
    for event, record in zip(slices, records):
        assert {"name", "ph", "ts", "dur", "pid", "tid", "args"} <= set(event)
        assert event["name"] == record.reason.name
        assert (event["pid"], event["tid"]) == (record.partition, record.vcpu)
        assert event["ts"] == pytest.approx(record.ts_ns / 1000, abs=1e-3)
        assert event["dur"] == pytest.approx(record.dur_ns / 1000, abs=1e-3)
        assert event["args"]["seq"] == record.seq and event["args"]["rip"] == f"{record.rip:#x}"
    io_out = slices[0]["args"]
    assert (io_out["port"], io_out["value"], io_out["direction"]) == ("0x500", "0x1234", "out")
    assert io_out["decoded"]["port"] == 0x500
    assert slices[2]["args"]["leaf"] == "0x1"
    assert slices[3]["args"]["msr"] == "0xc0000080"


def test_chrome_trace_names_tracks_and_counts_exits_per_second() -> None:
    trace = _chrome(_records())
    events = trace["traceEvents"]
    names = {(e["name"], e.get("tid")): e["args"]["name"] for e in events if e["ph"] == "M"}
    assert names == {("process_name", 0): "guest", ("thread_name", 0): "vCPU 0"}
    counters = [e for e in events if e["ph"] == "C"]
    assert counters and all(e["name"] == "exits/s" and e["pid"] == 0 for e in counters)
    assert [e["ts"] for e in counters] == sorted(e["ts"] for e in counters)
    assert counters[-1]["args"]["exits/s"] == 0
    bin_s = (counters[1]["ts"] - counters[0]["ts"]) / 1e6
    assert round(sum(e["args"]["exits/s"] for e in counters) * bin_s) == 5
    assert trace["displayTimeUnit"] == "ns"


def test_writers_stream_to_files(tmp_path) -> None:
    records = _records()
    chrome, jsonl = tmp_path / "t.json", tmp_path / "t.jsonl"
    write_records(records, chrome, jsonl=False, partition_names={0: "g"})
    assert len([e for e in json.loads(chrome.read_text())["traceEvents"] if e["ph"] == "X"]) == 5
    writer = JsonlWriter(open(jsonl, "w"), str(jsonl))
    writer.write([tuple(r) for r in records])
    writer.close()
    assert read_jsonl(jsonl) == records


def test_an_unwritable_trace_file_is_bad_input(tmp_path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        write_records([], tmp_path / "missing" / "t.json", jsonl=False)


def test_fast_lines_are_the_documented_objects() -> None:
    from tests.unit.hv.fakes import Rig
    from vtemu.debug.trace_export import chrome_event_json, jsonl_line
    from vtemu.vmx.interruption import InterruptionInfo
    from vtemu.vmx.exit import VmExit
    from vtemu.vmx.transitions import vm_exit
    records = _records()
    rig = Rig()
    rig.protected_mode()
    session = TraceSession([rig.partition])
    page_fault = VmExit(ExitReason.EXCEPTION_OR_NMI, 0x1000, 0xB8000,
                        interruption=InterruptionInfo.exception(14, error_code=True), interruption_error=6)
    vm_exit(rig.cpu, page_fault)
    records += session.records()
    assert records[-1].payload == (14, 6, 0xB8000)
    for record in records:
        assert json.loads(jsonl_line(record)) == record_dict(record)
        assert json.loads(chrome_event_json(record)) == ChromeTraceWriter.event(record)
    assert json.loads(chrome_event_json(records[-1]))["args"]["decoded"] == {"linear_address": 0xB8000}
