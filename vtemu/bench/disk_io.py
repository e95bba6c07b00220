"""Emulated against synthetic disk I/O: guests/disk natively on the ATA disk (`--mode vtx`)
and enlightened over the VMBus-like channel's storage (`--mode pv`), measured in one run.

Both builds move the same 1048 sectors (524 KiB) in their data phases -- 384 read, 300
written, 300 read back, 64 read in blocks of 8 -- between the POST codes D3h and D7h, and
print the same checksums. For each run the report gives, over those phases, the VM exits
(COM1 output included: the native build prints with OUTs, the enlightened one with console
packets) and the host time, each per KiB moved, and the same for the whole run (boot,
probing and printing included). Every exit passes one Python callback in both modes (to
see the POST codes), a small cost the native mode pays more often. The modes alternate
`repeats` times; exit counts are deterministic, times are medians.
"""

from __future__ import annotations

import statistics
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import unicorn.x86_const as U

from vtemu.hv.boot import build_partitions
from vtemu.hv.partition import Partition, PartitionSpec
from vtemu.hv.runloop import RunLimits, Runner
from vtemu.images import firmware_image, kernel_image
from vtemu.vmx.cpu import VmxCpu
from vtemu.vmx.exit import VmExit
from vtemu.vmx.qualifications import IoDirection, IoQualification
from vtemu.vmx.reasons import ExitReason

GUEST = Path(__file__).resolve().parents[2] / "guests" / "disk.S"
DISK_SECTORS = 8192
POST_PORT = 0x80
FIRST_DATA_PHASE, AFTER_DATA_PHASES = 0xD3, 0xD7
DATA_KIB = (384 + 300 + 300 + 64) * 512 / 1024          # 524 KiB
MODES = {"vtx": ("emulated ATA disk", {}), "pv": ("synthetic storage channel", {"PV": "1"})}


@dataclass
class DiskRun:
    mode: str
    device: str
    exit_code: int = 0
    output: bytes = b""
    data_exits: int = 0
    total_exits: int = 0
    data_seconds: list[float] = field(default_factory=list)
    total_seconds: list[float] = field(default_factory=list)

    @property
    def data_s(self) -> float:
        return statistics.median(self.data_seconds)

    @property
    def total_s(self) -> float:
        return statistics.median(self.total_seconds)

    def as_dict(self) -> dict[str, object]:
        return {"mode": self.mode, "device": self.device, "exit_code": self.exit_code,
                "data_kib": DATA_KIB, "data_exits": self.data_exits,
                "data_exits_per_kib": round(self.data_exits / DATA_KIB, 3),
                "data_us_per_kib": round(self.data_s / DATA_KIB * 1e6, 2),
                "total_exits": self.total_exits,
                "total_exits_per_kib": round(self.total_exits / DATA_KIB, 3),
                "total_us_per_kib": round(self.total_s / DATA_KIB * 1e6, 2),
                "data_samples_s": [round(s, 4) for s in self.data_seconds],
                "total_samples_s": [round(s, 4) for s in self.total_seconds]}


def disk_image(path: Path) -> None:
    """The same deterministic contents the guest tests use (dword k = k * 9E3779B1h)."""
    dwords = DISK_SECTORS * 128
    path.write_bytes(struct.pack(f"<{dwords}I", *[(k * 0x9E3779B1) & 0xFFFFFFFF
                                                   for k in range(dwords)]))


class _PhaseClock:
    """Exit count and host time at the guest's POST codes."""

    def __init__(self) -> None:
        self.exits = 0
        self.marks: dict[int, tuple[int, int]] = {}     # POST code -> (exits, ns)

    def inspect(self, cpu: VmxCpu, exit: VmExit) -> None:
        self.exits += 1
        if exit.reason is not ExitReason.IO_INSTRUCTION:
            return
        io = IoQualification.decode(exit.qualification)
        if io.port == POST_PORT and io.direction is IoDirection.OUT and not io.string:
            code = cpu.vcpu.read(U.UC_X86_REG_RAX) & 0xFF
            self.marks[code] = (self.exits, time.perf_counter_ns())

    def between(self, first: int, after: int) -> tuple[int, float]:
        (exits0, ns0), (exits1, ns1) = self.marks[first], self.marks[after]
        return exits1 - exits0, (ns1 - ns0) / 1e9


def _boot(run: DiskRun, image: bytes, firmware: bytes, disk: Path) -> None:
    disk_image(disk)
    output = bytearray()
    spec = PartitionSpec(name="disk", kernel=image, mode=run.mode, disk=disk)
    partition: Partition = build_partitions([spec], firmware, lambda index, spec: output.extend)[0]
    clock = _PhaseClock()
    partition.exit_inspectors.append(clock.inspect)
    start = time.perf_counter()
    Runner([partition], RunLimits(timeout_s=600)).run()
    run.total_seconds.append(time.perf_counter() - start)
    if partition.disk is not None:
        partition.disk.close()
    assert partition.result is not None
    run.exit_code, run.output, run.total_exits = partition.result.exit_code, bytes(output), clock.exits
    run.data_exits, seconds = clock.between(FIRST_DATA_PHASE, AFTER_DATA_PHASES)
    run.data_seconds.append(seconds)


def measure(repeats: int = 3) -> list[DiskRun]:
    firmware = firmware_image()
    images = {mode: kernel_image(GUEST, defines) for mode, (_, defines) in MODES.items()}
    runs = {mode: DiskRun(mode, device) for mode, (device, _) in MODES.items()}
    with tempfile.TemporaryDirectory(prefix="vtemu-disk-io-") as folder:
        for _ in range(repeats):
            for mode, run in runs.items():     # alternate so host drift hits both alike
                _boot(run, images[mode], firmware, Path(folder) / f"{mode}.img")
    return list(runs.values())


def format_table(runs: list[DiskRun]) -> str:
    lines = [f"disk: {DATA_KIB:g} KiB moved in the data phases (POST D3h-D6h), median of "
             f"{len(runs[0].total_seconds)} runs",
             f"{'mode':5} {'device':27} {'exits':>6} {'exits/KiB':>10} {'µs/KiB':>9} "
             f"{'run exits':>10} {'run µs/KiB':>11}"]
    for run in runs:
        row = run.as_dict()
        lines.append(f"{run.mode:5} {run.device:27} {run.data_exits:6d} "
                     f"{row['data_exits_per_kib']:10.3f} {row['data_us_per_kib']:9.1f} "
                     f"{run.total_exits:10d} {row['total_us_per_kib']:11.1f}")
    native, synthetic = runs
    lines.append(f"synthetic/emulated: {native.data_exits / max(1, synthetic.data_exits):.0f}x fewer "
                 f"exits, {native.data_s / synthetic.data_s:.1f}x less host time per KiB")
    return "\n".join(lines)
