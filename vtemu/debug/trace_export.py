"""Trace files: JSON Lines (one exit per line) and Chrome trace-event JSON.

JSONL keeps every number exact (ints, host times in ns) and reads back into the same
`TraceRecord`s (`read_jsonl`). The Chrome format ("Trace Event Format", the JSON that
chrome://tracing, Perfetto and speedscope open) shows each exit as a complete event
(ph "X") on one track per vCPU (pid = partition, tid = vCPU), ts/dur in microseconds of host
time from the start of the trace, and a counter track (ph "C") of exits per second.
Both writers stream: each chunk of records is formatted and written as it arrives.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from enum import Enum
from pathlib import Path
from typing import IO, Callable, Iterable, Sequence

from vtemu.debug.exitinfo import FAMILIES, NO_PAYLOAD
from vtemu.debug.trace import REASONS, TraceRecord, TraceWriter
from vtemu.errors import BadInput
from vtemu.vmx.qualifications import decode_qualification
from vtemu.vmx.reasons import ExitReason

JSONL_FIELDS = ("partition", "seq", "vcpu", "instructions", "reason", "number", "qualification", "rip",
                "ts_ns", "dur_ns", "injected", "payload", "decoded")
# Shown in hex in the Chrome viewer (its argument panel prints numbers in decimal).
_HEX_ARGS = frozenset({"rip", "qualification", "port", "msr", "leaf", "subleaf", "value", "gpa",
                       "linear", "cr2", "hypercall", "selector", "error_code"})
COUNTER_BIN_NS = 1_000_000          # exits are counted per millisecond of host time...
COUNTER_POINTS = 500                # ...and merged into at most this many counter samples


@functools.lru_cache(maxsize=4096)
def _decoded(reason: ExitReason, qualification: int, vector: int | None) -> tuple[tuple[str, object], ...]:
    try:
        layout = decode_qualification(reason, qualification, vector=vector)
    except ValueError:
        return ()
    if layout is None:
        return ()
    return tuple((f.name, _plain(getattr(layout, f.name))) for f in dataclasses.fields(layout))


def _plain(value: object) -> object:
    return value.name if isinstance(value, Enum) else value


def decoded_qualification(record: TraceRecord) -> dict[str, object]:
    """The qualification in its SDM layout (Tables 27-1 .. 27-7), empty if it has none."""
    return dict(_decoded(record.reason, record.qualification, _vector(record)))


# --- fast formatting: the writers build each line from cached fragments; `record_dict` and
# `ChromeTraceWriter.event` are the same objects as dicts (the tests hold them equal).
_STRINGS: dict[str, str] = {}


def _json(value: object) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return str(value)
    if type(value) is str:
        text = _STRINGS.get(value)
        if text is None:
            text = _STRINGS[value] = json.dumps(value)
        return text
    return json.dumps(value)


def _hex_json(value: object) -> str:
    return f'"{value:#x}"' if type(value) is int else _json(value)


@functools.lru_cache(maxsize=None)
def _payload_format(reason: ExitReason, hex_values: bool) -> tuple[tuple[str, Callable[[object], str]], ...]:
    fields = FAMILIES.get(reason, NO_PAYLOAD).fields
    return tuple((f'"{name}":', _hex_json if hex_values and name in _HEX_ARGS else _json) for name in fields)


def _payload_json(reason: ExitReason, payload: tuple, chrome: bool) -> str:
    """The payload object's members (no braces); Chrome leaves out missing values."""
    parts = [name + form(value) for (name, form), value in zip(_payload_format(reason, chrome), payload)
             if value is not None or not chrome]
    return ",".join(parts)


@functools.lru_cache(maxsize=4096)
def _decoded_json(reason: ExitReason, qualification: int, vector: int | None) -> str:
    return json.dumps(dict(_decoded(reason, qualification, vector)), separators=(",", ":"))


def _vector(record: TraceRecord) -> int | None:
    return record.payload[0] if record.reason is ExitReason.EXCEPTION_OR_NMI and record.payload else None


def jsonl_line(record: tuple) -> str:
    """`record_dict(record)` as one compact JSON line, built without the generic encoder.
    `record` is a TraceRecord or a raw record tuple (same layout, the reason an int)."""
    partition, seq, vcpu, instructions, number, qualification, rip, ts_ns, dur_ns, injected, payload = record
    reason = REASONS[number]
    vector = payload[0] if reason is ExitReason.EXCEPTION_OR_NMI and payload else None
    return (f'{{"partition":{partition},"seq":{seq},"vcpu":{vcpu},"instructions":{instructions},'
            f'"reason":"{reason.name}","number":{int(number)},"qualification":{qualification},'
            f'"rip":{rip},"ts_ns":{ts_ns},"dur_ns":{dur_ns},"injected":{_json(injected)},'
            f'"payload":{{{_payload_json(reason, payload, False)}}},'
            f'"decoded":{_decoded_json(reason, qualification, vector)}}}\n')


def chrome_event_json(record: tuple) -> str:
    """`ChromeTraceWriter.event(record)` as compact JSON, built without the generic encoder."""
    partition, seq, vcpu, instructions, number, qualification, rip, ts_ns, dur_ns, injected, payload = record
    reason = REASONS[number]
    vector = payload[0] if reason is ExitReason.EXCEPTION_OR_NMI and payload else None
    decoded = _decoded_json(reason, qualification, vector)
    members = _payload_json(reason, payload, True)
    return (f'{{"name":"{reason.name}","cat":"{_category(reason)}","ph":"X","ts":{_us_text(ts_ns)},'
            f'"dur":{_us_text(dur_ns)},"pid":{partition},"tid":{vcpu},"args":{{"seq":{seq},'
            f'"number":{int(number)},"instructions":{instructions},"rip":"{rip:#x}",'
            f'"qualification":"{qualification:#x}"'
            + ("" if decoded == "{}" else f',"decoded":{decoded}')
            + ("" if injected is None else f',"injected":{injected}')
            + ("," + members if members else "") + "}}")


@functools.lru_cache(maxsize=None)
def _category(reason: ExitReason) -> str:
    return FAMILIES.get(reason, NO_PAYLOAD).name or "exit"


def record_dict(record: TraceRecord) -> dict[str, object]:
    """One JSONL object: exact integers, the payload by field name, the decoded qualification."""
    return {"partition": record.partition, "seq": record.seq, "vcpu": record.vcpu,
            "instructions": record.instructions, "reason": record.reason.name,
            "number": int(record.reason), "qualification": record.qualification, "rip": record.rip,
            "ts_ns": record.ts_ns, "dur_ns": record.dur_ns, "injected": record.injected,
            "payload": record.payload_dict(), "decoded": decoded_qualification(record)}


def record_from_dict(data: dict[str, object]) -> TraceRecord:
    """The inverse of `record_dict` (the decoded qualification is derived, so not read)."""
    reason = ExitReason[str(data["reason"])]
    payload = data.get("payload") or {}
    if not isinstance(payload, dict):
        raise ValueError("payload is not an object")
    fields = FAMILIES.get(reason, NO_PAYLOAD).fields
    return TraceRecord(int(data["partition"]), int(data["seq"]), int(data["vcpu"]),  # type: ignore[arg-type]
                       int(data["instructions"]), reason, int(data["qualification"]),  # type: ignore[arg-type]
                       int(data["rip"]), int(data["ts_ns"]), int(data["dur_ns"]),  # type: ignore[arg-type]
                       None if data.get("injected") is None else int(data["injected"]),  # type: ignore[arg-type]
                       tuple(payload.get(name) for name in fields))


def read_jsonl(path: str | Path) -> list[TraceRecord]:
    records = []
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                records.append(record_from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError) as error:
                raise BadInput(f"{path}:{number}: not a vtemu trace record ({error})") from None
    return records


class _FileWriter(TraceWriter):
    def __init__(self, stream: IO[str], path: str = "trace") -> None:
        self.stream = stream
        self.path = path

    def _emit(self, text: str) -> None:
        try:
            self.stream.write(text)
        except OSError as error:
            raise BadInput(f"{self.path}: {error.strerror or error}") from None

    def close(self) -> None:
        try:
            self.stream.close()
        except OSError as error:
            raise BadInput(f"{self.path}: {error.strerror or error}") from None


class JsonlWriter(_FileWriter):
    def write(self, records: Sequence[tuple]) -> None:
        self._emit("".join([jsonl_line(raw) for raw in records]))


class ChromeTraceWriter(_FileWriter):
    """{"traceEvents": [...]} written as records arrive; metadata and counters at close."""

    def __init__(self, stream: IO[str], partition_names: dict[int, str], path: str = "trace") -> None:
        super().__init__(stream, path)
        self.names = partition_names
        self._threads: set[tuple[int, int]] = set()
        self._bins: dict[int, dict[int, int]] = {}     # partition -> ms bin -> exits
        self._end_ns = 0
        self._events = 0
        self._emit('{"traceEvents":[\n')

    def write(self, records: Sequence[tuple]) -> None:
        lines = []
        threads, end_ns = self._threads, self._end_ns
        for raw in records:
            lines.append(chrome_event_json(raw))
            partition, _, vcpu = raw[:3]
            ts_ns, dur_ns = raw[7], raw[8]
            threads.add((partition, vcpu))
            bins = self._bins.setdefault(partition, {})
            slot = ts_ns // COUNTER_BIN_NS
            bins[slot] = bins.get(slot, 0) + 1
            end_ns = max(end_ns, ts_ns + dur_ns)
        self._end_ns = end_ns
        self._lines(lines)

    def _lines(self, lines: list[str]) -> None:
        if not lines:
            return
        self._emit(("" if not self._events else ",\n") + ",\n".join(lines))
        self._events += len(lines)

    @staticmethod
    def event(record: TraceRecord) -> dict[str, object]:
        args: dict[str, object] = {"seq": record.seq, "number": int(record.reason),
                                   "instructions": record.instructions}
        args["rip"] = record.rip
        args["qualification"] = record.qualification
        decoded = decoded_qualification(record)
        if decoded:
            args["decoded"] = decoded
        if record.injected is not None:
            args["injected"] = record.injected
        args.update((name, value) for name, value in record.payload_dict().items() if value is not None)
        for name in _HEX_ARGS.intersection(args):
            if isinstance(args[name], int) and not isinstance(args[name], bool):
                args[name] = f"{args[name]:#x}"
        return {"name": record.reason.name, "cat": _category(record.reason), "ph": "X",
                "ts": _us(record.ts_ns), "dur": _us(record.dur_ns),
                "pid": record.partition, "tid": record.vcpu, "args": args}

    def counter_events(self) -> list[dict[str, object]]:
        """Exits per second per partition, over bins wide enough for <= COUNTER_POINTS samples."""
        events: list[dict[str, object]] = []
        last = self._end_ns // COUNTER_BIN_NS
        width = max(1, -(-(last + 1) // COUNTER_POINTS))     # in COUNTER_BIN_NS units
        seconds = width * COUNTER_BIN_NS / 1e9
        for partition, bins in sorted(self._bins.items()):
            merged: dict[int, int] = {}
            for slot, count in bins.items():
                merged[slot // width] = merged.get(slot // width, 0) + count
            for index in range(last // width + 1):
                events.append({"name": "exits/s", "ph": "C", "ts": _us(index * width * COUNTER_BIN_NS),
                               "pid": partition, "args": {"exits/s": round(merged.get(index, 0) / seconds)}})
            events.append({"name": "exits/s", "ph": "C", "ts": _us((last // width + 1) * width * COUNTER_BIN_NS),
                           "pid": partition, "args": {"exits/s": 0}})
        return events

    def metadata_events(self) -> list[dict[str, object]]:
        events: list[dict[str, object]] = []
        for partition in sorted({p for p, _ in self._threads} | set(self._bins)):
            events.append({"name": "process_name", "ph": "M", "pid": partition, "tid": 0,
                           "args": {"name": self.names.get(partition, f"partition {partition}")}})
        for partition, vcpu in sorted(self._threads):
            events.append({"name": "thread_name", "ph": "M", "pid": partition, "tid": vcpu,
                           "args": {"name": f"vCPU {vcpu}"}})
        return events

    def close(self) -> None:
        tail = self.metadata_events() + self.counter_events()
        self._lines([json.dumps(event, separators=(",", ":")) for event in tail])
        self._emit('\n],"displayTimeUnit":"ns","otherData":{"generator":"vtemu trace"}}\n')
        super().close()


def _us_text(ns: int) -> str:
    """Nanoseconds as microseconds with three decimals, exactly (no float formatting)."""
    return f"{ns // 1000}.{ns % 1000:03d}" if ns >= 0 else f"-{_us_text(-ns)}"


def _us(ns: int) -> float:
    return float(_us_text(ns))


def open_output(path: str | Path) -> IO[str]:
    """Open an output file before the run, so a bad path fails at once, in one line."""
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as error:
        raise BadInput(f"{path}: {(error.strerror or str(error)).lower()}") from None


def open_writer(path: str | Path, partition_names: dict[int, str], jsonl: bool) -> TraceWriter:
    stream = open_output(path)
    if jsonl:
        return JsonlWriter(stream, str(path))
    return ChromeTraceWriter(stream, partition_names, str(path))


def write_records(records: Iterable[TraceRecord], path: str | Path, jsonl: bool,
                  partition_names: dict[int, str] | None = None) -> None:
    """Write records already in memory (a session without a writer) to a file."""
    writer = open_writer(path, partition_names or {}, jsonl)
    writer.write(list(records))
    writer.close()
