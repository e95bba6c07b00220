"""Record and replay COM1's host input (`vtemu run --record FILE` / `--replay FILE`).

The UART pulls host bytes one at a time at points the guest drives (an LSR or IIR read, an
IER write, emptying the FIFO; or the run loop, when every vCPU waits for input). Each pull
returns a byte or nothing. Given the same earlier results the guest reaches the same pull
points, so the sequence of pull results, in order, is all a replay needs to reproduce a run
exit for exit, however the bytes were delivered: a pipe (every pull gets a byte until the
end of input) or a terminal (read without waiting, so most polls find nothing and the bytes
land wherever the typist's timing put them).

The log stores that sequence compactly, as JSON (format "vtemu-input-log", version 1):

    received     base64 of every byte the guest received, in order
    empty_pulls  [[i, n], ...]: n pulls found nothing just before byte i (i = len: after the last)
    at           [[exits, instructions], ...] per byte: the partition's VM exits so far and its
                 guest instructions retired when the byte was pulled

`at` is a check, not an input: a replay whose pulls happen at another exit count (another
image or options) stops with an error instead of silently feeding a different run.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Callable

from vtemu.errors import BadInput

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition

FORMAT = "vtemu-input-log"
VERSION = 1

Source = Callable[[bool], "int | None"]
Position = Callable[[], "tuple[int, int]"]


class ReplayDiverged(BadInput):
    """The replayed run reached an input pull at another point than the recorded run."""


@dataclass
class InputLog:
    received: bytearray = field(default_factory=bytearray)
    empty_pulls: dict[int, int] = field(default_factory=dict)
    at: list[tuple[int, int]] | None = field(default_factory=list)
    source: str = ""          # what was recorded: "terminal", "pipe", "file" (information only)

    @property
    def pulls(self) -> int:
        return len(self.received) + sum(self.empty_pulls.values())

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "format": FORMAT, "version": VERSION, "device": "com1", "source": self.source,
            "received": base64.b64encode(bytes(self.received)).decode("ascii"),
            "empty_pulls": [[index, count] for index, count in sorted(self.empty_pulls.items())],
        }
        if self.at is not None:
            data["at"] = [list(position) for position in self.at]
        return data

    def save(self, stream: IO[str]) -> None:
        json.dump(self.to_json(), stream, separators=(",", ":"))
        stream.write("\n")

    @classmethod
    def from_json(cls, data: object) -> InputLog:
        """Validates everything; raises ValueError naming what is wrong."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not a vtemu input log")
        version = data.get("version")
        if version != VERSION:
            raise ValueError(f"input log version {version!r} (this vtemu reads version {VERSION})")
        try:
            received = bytearray(base64.b64decode(str(data.get("received", "")), validate=True))
        except (binascii.Error, ValueError):
            raise ValueError("'received' is not base64") from None
        empty: dict[int, int] = {}
        gaps = data.get("empty_pulls", [])
        if not isinstance(gaps, list):
            raise ValueError("'empty_pulls' is not a list")
        for gap in gaps:
            if (not isinstance(gap, list) or len(gap) != 2 or not all(_natural(v) for v in gap)
                    or gap[0] > len(received) or gap[1] == 0 or gap[0] in empty):
                raise ValueError(f"bad 'empty_pulls' entry {gap!r}")
            empty[gap[0]] = gap[1]
        at = data.get("at")
        if at is not None:
            if (not isinstance(at, list) or len(at) != len(received)
                    or not all(isinstance(p, list) and len(p) == 2 and all(_natural(v) for v in p)
                               for p in at)):
                raise ValueError("'at' does not give one [exits, instructions] pair per byte")
            at = [(p[0], p[1]) for p in at]
        return cls(received, empty, at, str(data.get("source", "")))

    @classmethod
    def load(cls, path: str) -> InputLog:
        try:
            with open(path, encoding="utf-8") as stream:
                text = stream.read()
        except OSError as error:
            raise BadInput(f"{path}: {(error.strerror or str(error)).lower()}") from None
        except UnicodeDecodeError:
            raise BadInput(f"{path}: not a vtemu input log (not text)") from None
        try:
            return cls.from_json(json.loads(text))
        except json.JSONDecodeError:
            raise BadInput(f"{path}: not a vtemu input log (not JSON)") from None
        except ValueError as error:
            raise BadInput(f"{path}: {error}") from None


def _natural(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _nowhere() -> tuple[int, int]:
    return (0, 0)


def partition_position(partition: "Partition") -> Position:
    """Where a partition's run is: VM exits taken and guest instructions retired, all vCPUs."""
    def position() -> tuple[int, int]:
        cpus = partition.vcpus
        return (sum(cpu.exits_taken for cpu in cpus), sum(cpu.vcpu.retired_so_far for cpu in cpus))
    return position


class RecordingInput:
    """An rx source that passes another one's results through and logs each of them."""

    def __init__(self, source: Source, log: InputLog | None = None) -> None:
        self.source = source
        self.log = log if log is not None else InputLog()
        self.position: Position = _nowhere

    def __call__(self, block: bool) -> int | None:
        byte = self.source(block)
        log = self.log
        if byte is None:
            index = len(log.received)
            log.empty_pulls[index] = log.empty_pulls.get(index, 0) + 1
        else:
            log.received.append(byte)
            if log.at is not None:
                log.at.append(self.position())
        return byte


class ReplayInput:
    """An rx source that gives back a log's pull results in order, then nothing for good."""

    def __init__(self, log: InputLog, name: str = "replay") -> None:
        self.log = log
        self.name = name
        self.position: Position | None = None     # set to check each byte's exit count
        self.delivered = 0
        self._skip = log.empty_pulls.get(0, 0)

    def __call__(self, block: bool) -> int | None:
        if self._skip:
            self._skip -= 1
            return None
        index = self.delivered
        log = self.log
        if index >= len(log.received):
            return None
        if self.position is not None and log.at is not None:
            exits = self.position()[0]
            if exits != log.at[index][0]:
                raise ReplayDiverged(
                    f"{self.name}: the run diverged from the recording at input byte {index} "
                    f"(recorded after {log.at[index][0]} VM exits, replayed after {exits}); "
                    "replay with the image and options that were recorded")
        self.delivered = index + 1
        self._skip = log.empty_pulls.get(index + 1, 0)
        return log.received[index]

    @property
    def finished(self) -> bool:
        return self.delivered == len(self.log.received)
