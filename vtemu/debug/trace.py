"""A compact record of every VM exit (`vtemu trace`).

Per exit the recorder appends one plain tuple, laid out as `TraceRecord`:

    partition, seq, vcpu, instructions, reason, qualification, rip, ts_ns, dur_ns, injected, payload

`seq` is the exit's number on its vCPU (0, 1, ...; gaps are exits a filter left out),
`instructions` the guest instructions retired before it (VmExit.instructions), `reason` the
ExitReason, `qualification` the raw exit qualification (decoded only when exported), `ts_ns`
the host time the handler started, relative to the start of the trace, `dur_ns` the
handler's time, `injected` the vector the handler injected (e.g. #GP for an unknown MSR) or
None, and `payload` a tuple of the values vtemu.debug.exitinfo names for the exit's family
(operands read before the handler, results after it; results are None when the handler
injected a fault).

Nothing is formatted while the guest runs: records are flushed to a writer in chunks of
`chunk` records (bounded memory), or kept in memory when there is no writer. In the raw
tuple the reason is a plain int, so every record holds only atoms and the garbage collector
stops tracking it: an ExitReason member would keep a long trace in every full collection,
which made tracing twice as costly.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Iterable, NamedTuple, Sequence

from vtemu.debug.exitinfo import FAMILIES, NO_PAYLOAD
from vtemu.debug.filters import ExitFilter
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.outcome import Outcome
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit

CHUNK = 1 << 16
_VALID = 1 << 31
_ENTRY_INTERRUPTION = F.VM_ENTRY_INTR_INFO_FIELD
_now = time.perf_counter_ns


class TraceRecord(NamedTuple):
    partition: int
    seq: int
    vcpu: int
    instructions: int
    reason: ExitReason
    qualification: int
    rip: int
    ts_ns: int
    dur_ns: int
    injected: int | None
    payload: tuple

    @property
    def fields(self) -> tuple[str, ...]:
        return FAMILIES.get(self.reason, NO_PAYLOAD).fields

    def payload_dict(self) -> dict[str, object]:
        return dict(zip(self.fields, self.payload))


Sink = Callable[[Sequence[tuple]], None]
REASONS = {int(reason): reason for reason in ExitReason}


def record_of(raw: tuple) -> TraceRecord:
    """A raw record (as recorded, the reason a plain int) as a TraceRecord."""
    return TraceRecord._make((*raw[:4], REASONS[raw[4]], *raw[5:]))


class TraceRecorder:
    """One partition's exits. `origin_ns` is the host time (perf_counter_ns) of ts 0."""

    def __init__(self, partition: "Partition", exit_filter: ExitFilter | None = None,
                 sink: Sink | None = None, origin_ns: int | None = None, chunk: int = CHUNK) -> None:
        self.partition = partition
        self.index = partition.index
        self.filter = exit_filter if exit_filter is not None and not exit_filter.everything else None
        self.sink = sink
        self.chunk = chunk
        self.origin_ns = time.perf_counter_ns() if origin_ns is None else origin_ns
        self.buffer: list[tuple] = []
        self.recorded = 0
        self._open: list[tuple | None] = []   # inspector -> observer, a stack as dispatch nests
        partition.exit_inspectors.append(self._before)
        partition.exit_observers.append(self._after)

    def _before(self, cpu: "VmxCpu", exit: "VmExit") -> None:
        if self.filter is not None and not self.filter.wants(exit.reason):
            self._open.append(None)
            return
        family = FAMILIES.get(exit.reason, NO_PAYLOAD)
        self._open.append((cpu, family, family.operands(exit, cpu), _now()))

    def _after(self, exit: "VmExit", outcome: "Outcome", elapsed_ns: int) -> None:
        entry = self._open.pop()
        if entry is None:
            return
        cpu, family, payload, start = entry
        injection = cpu.vmcs.stored(_ENTRY_INTERRUPTION)
        injected = injection & 0xFF if injection & _VALID else None
        missing = len(family.fields) - len(payload)
        if missing:
            # Results are read after the handler; none when the instruction faulted.
            if injected is None and family.results is not None:
                payload += family.results(exit, cpu)
            else:
                payload += (None,) * missing
        if self.filter is not None and not self.filter.matches(exit.reason, cpu.index, exit.guest_rip,
                                                               payload):
            return
        self.buffer.append((self.index, cpu.exits_taken - 1, cpu.index, exit.instructions, int(exit.reason),
                            exit.qualification, exit.guest_rip, start - self.origin_ns, elapsed_ns,
                            injected, payload))
        if self.sink is not None and len(self.buffer) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        """Hand the buffered records to the sink (formatting happens there, in one go)."""
        if self.sink is None or not self.buffer:
            return
        chunk, self.buffer = self.buffer, []
        self.recorded += len(chunk)
        self.sink(chunk)

    def records(self) -> list[TraceRecord]:
        """The records still in memory (all of them when there is no sink)."""
        return [record_of(raw) for raw in self.buffer]

    def detach(self) -> None:
        self.partition.exit_inspectors.remove(self._before)
        self.partition.exit_observers.remove(self._after)


class TraceSession:
    """Recorders for every partition of a run, sharing one time origin and one writer."""

    def __init__(self, partitions: Iterable["Partition"], exit_filter: ExitFilter | None = None,
                 writer: "TraceWriter | None" = None, chunk: int = CHUNK) -> None:
        self.writer = writer
        self.origin_ns = time.perf_counter_ns()
        sink = writer.write if writer is not None else None
        self.recorders = [TraceRecorder(p, exit_filter, sink, self.origin_ns, chunk) for p in partitions]

    def records(self) -> list[TraceRecord]:
        return [record for recorder in self.recorders for record in recorder.records()]

    def close(self) -> int:
        """Flush every recorder and finish the writer's file; the number of records written."""
        for recorder in self.recorders:
            recorder.flush()
        if self.writer is not None:
            self.writer.close()
        return sum(recorder.recorded for recorder in self.recorders)


class TraceWriter:
    """What a session writes to (vtemu.debug.trace_export): records in chunks, then close."""

    def write(self, records: Sequence[tuple]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
