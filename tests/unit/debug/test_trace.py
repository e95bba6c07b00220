"""Trace records: one compact tuple per exit, operands read before the handler, results after,
filters applied at record time, chunks handed to a sink."""

from __future__ import annotations

from tests.unit.debug.helpers import PORT, io, rig_with_port, take
from vtemu.debug.filters import build_filter
from vtemu.debug.trace import TraceRecord, TraceRecorder, TraceSession
from vtemu.vmx.qualifications import IoDirection
from vtemu.vmx.reasons import ExitReason

IN, OUT = IoDirection.IN, IoDirection.OUT


def test_an_in_records_port_size_direction_and_the_value_the_handler_read() -> None:
    rig, _ = rig_with_port(reads=[0x5A])
    recorder = TraceRecorder(rig.partition)
    io(rig, IN, rax=0)
    [record] = recorder.records()
    assert isinstance(record, TraceRecord)
    assert record.reason is ExitReason.IO_INSTRUCTION
    assert (record.partition, record.seq, record.vcpu) == (0, 0, 0)
    assert record.rip == rig.get("rip") - 1          # the IN (1 byte) has been completed
    assert record.payload_dict() == {"port": PORT, "size": 1, "direction": "in", "string": False,
                                     "rep": False, "value": 0x5A}
    assert record.injected is None
    assert record.dur_ns > 0 and record.ts_ns >= 0
    assert record.instructions == rig.vcpu.retired_so_far


def test_sequence_numbers_count_the_vcpus_exits() -> None:
    rig, device = rig_with_port()
    recorder = TraceRecorder(rig.partition)
    for value in (1, 2, 3):
        io(rig, OUT, rax=value)
    records = recorder.records()
    assert [r.seq for r in records] == [0, 1, 2]
    assert [r.payload_dict()["value"] for r in records] == [1, 2, 3]
    assert device.writes == [(0, 1, 1), (0, 1, 2), (0, 1, 3)]
    assert all(a.ts_ns + a.dur_ns <= b.ts_ns for a, b in zip(records, records[1:]))  # slices in order


def test_cpuid_leaf_is_read_before_the_handler_overwrites_eax() -> None:
    rig, _ = rig_with_port()
    recorder = TraceRecorder(rig.partition)
    take(rig, ExitReason.CPUID, "cpuid", rax=0x40000000, rcx=0)
    assert rig.get("rax") != 0x40000000                  # the handler answered in EAX
    [record] = recorder.records()
    assert record.payload_dict() == {"leaf": 0x40000000, "subleaf": 0}


def test_a_faulting_rdmsr_records_the_injected_gp_and_no_value() -> None:
    rig, _ = rig_with_port()
    recorder = TraceRecorder(rig.partition)
    take(rig, ExitReason.RDMSR, "rdmsr", rcx=0x1234_5678, rax=7, rdx=9)
    [record] = recorder.records()
    assert record.injected == 13
    assert record.payload_dict() == {"msr": 0x1234_5678, "value": None}


def test_reason_and_payload_filters_apply_at_record_time() -> None:
    rig, _ = rig_with_port(reads=[0x41, 0x42])
    recorder = TraceRecorder(rig.partition, build_filter(["io"], [f"direction=in"]))
    io(rig, OUT, rax=1)
    io(rig, IN, rax=0)
    take(rig, ExitReason.CPUID, "cpuid", rax=0)
    io(rig, IN, rax=0)
    records = recorder.records()
    assert [(r.seq, r.payload_dict()["value"]) for r in records] == [(1, 0x41), (3, 0x42)]


def test_records_reach_the_sink_in_chunks() -> None:
    rig, _ = rig_with_port()
    chunks: list[list[tuple]] = []
    recorder = TraceRecorder(rig.partition, sink=lambda chunk: chunks.append(list(chunk)), chunk=2)
    for value in range(5):
        io(rig, OUT, rax=value)
    assert [len(chunk) for chunk in chunks] == [2, 2]
    recorder.flush()
    assert [len(chunk) for chunk in chunks] == [2, 2, 1]
    assert recorder.recorded == 5
    assert [TraceRecord._make(raw).payload[-1] for chunk in chunks for raw in chunk] == [0, 1, 2, 3, 4]


def test_a_session_shares_one_origin_and_detaching_stops_recording() -> None:
    rig, _ = rig_with_port()
    session = TraceSession([rig.partition])
    io(rig, OUT, rax=1)
    assert len(session.records()) == 1
    assert session.recorders[0].origin_ns == session.origin_ns
    session.recorders[0].detach()
    io(rig, OUT, rax=2)
    assert len(session.records()) == 1
    assert not rig.partition.exit_inspectors and not rig.partition.exit_observers[1:]
