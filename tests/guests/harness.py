"""Boot a guest from guests/ in-process, the way `vtemu run` does, and keep what it did.

A run gives the serial bytes, the exit status (the isa-debug-exit value or a RunEnd code),
the partition (statistics, devices) and every VM exit in order, each with the outcome the
hypervisor chose and, for a plain OUT, the value written (read from RAX while the exit is
being handled: an OUT handler never changes RAX). Images are assembled from source once
per process, so the tests work without `make`; the firmware ROM likewise.
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import unicorn.x86_const as U

from vtemu.asm import build_guest
from vtemu.hv.boot import build_partitions
from vtemu.hv.outcome import Outcome
from vtemu.hv.partition import Partition, PartitionSpec
from vtemu.hv.runloop import RunLimits, Runner
from vtemu.images import firmware_image
from vtemu.vmx.exit import VmExit
from vtemu.vmx.qualifications import IoDirection, IoQualification
from vtemu.vmx.reasons import ExitReason

PROJECT = Path(__file__).resolve().parents[2]
GUESTS = PROJECT / "guests"
DEFAULT_TIMEOUT_S = 30.0
QEMU = "qemu-system-x86_64"
DEBUG_EXIT_ARGS = ("-device", "isa-debug-exit,iobase=0xf4,iosize=0x4")
# COM1 input for the guests that read it (vtemu and QEMU get the same bytes).
GUEST_INPUT = {"echo": b"hello, vtemu\nSecond line 2\nquit\n"}
# Guests that need a disk image on the primary IDE channel: how many sectors it gets.
GUEST_DISK_SECTORS = {"disk": 8192}
IMAGE_DWORD_MULTIPLIER = 0x9E3779B1


@dataclass(frozen=True)
class RecordedExit:
    exit: VmExit
    outcome: Outcome
    out_value: int | None = None   # the value of a plain (non-string) OUT
    time_ns: int = 0               # guest time when the exit was handled

    @property
    def reason(self) -> ExitReason:
        return self.exit.reason

    def io(self) -> IoQualification:
        return IoQualification.decode(self.exit.qualification)


@dataclass
class GuestRun:
    name: str
    serial: bytes
    exit_code: int
    reason: str
    partition: Partition
    exits: list[RecordedExit] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.serial.decode("ascii")

    def exit_signature(self) -> list[tuple[str, int, int, int]]:
        """(reason, guest RIP, qualification, instructions retired) of every exit, in order."""
        return [(r.exit.reason.name, r.exit.guest_rip, r.exit.qualification, r.exit.instructions)
                for r in self.exits]


def guest_source(name: str) -> Path:
    return GUESTS / f"{name}.S"


def all_guests() -> list[str]:
    return sorted(path.stem for path in GUESTS.glob("*.S"))


@functools.cache
def _image(name: str, stamp: tuple[float, ...]) -> bytes:
    return build_guest(guest_source(name))


def guest_image(name: str) -> bytes:
    """The assembled image, rebuilt when the source or an include changed."""
    sources = [guest_source(name), *sorted((GUESTS / "include").glob("*.inc"))]
    return _image(name, tuple(path.stat().st_mtime for path in sources))


@functools.cache
def _firmware() -> bytes:
    return firmware_image()


def bytes_input(data: bytes):
    """COM1's host end fed from fixed bytes, as a file would feed it."""
    remaining = iter(data)
    return lambda block: next(remaining, None)


def disk_image_bytes(sectors: int) -> bytes:
    """Deterministic disk contents: the dword at byte offset 4k holds k * 9E3779B1h mod 2^32."""
    dwords = sectors * 128
    return struct.pack(f"<{dwords}I", *[(k * IMAGE_DWORD_MULTIPLIER) & 0xFFFFFFFF
                                        for k in range(dwords)])


def make_disk_image(path: Path, sectors: int) -> Path:
    path.write_bytes(disk_image_bytes(sectors))
    return path


def run_guest(name: str, timeout_s: float = DEFAULT_TIMEOUT_S,
              max_instructions: int | None = None, image: bytes | None = None,
              serial_input: bytes | None = None,
              before_run: Callable[[Partition], None] | None = None,
              disk: Path | None = None,
              rx_source: Callable[[bool], int | None] | None = None,
              paging: str = "ept", mode: str = "vtx") -> GuestRun:
    """Boot guests/<name>.S through vtemu's firmware, in this process.

    `before_run(partition)` runs once the machine is built (RAM, EPT, devices) and before the
    first instruction: a test can plant data in guest RAM or in VMM-private memory there.
    `disk`: a raw image file as the primary-master ATA disk (the guest may write to it).
    `rx_source`: COM1's host end instead of `serial_input` (e.g. an input recorder or replayer).
    `paging`: "ept" or "shadow" (`--paging`); `mode`: the CPU virtualization mode (`--mode`)."""
    serial = bytearray()
    data = GUEST_INPUT.get(name) if serial_input is None else serial_input
    spec = PartitionSpec(name=name, kernel=image if image is not None else guest_image(name),
                         paging=paging, mode=mode,
                         serial_input=rx_source if rx_source is not None
                         else bytes_input(data) if data is not None else None,
                         disk=disk)
    partitions = build_partitions([spec], _firmware(), lambda index, spec: serial.extend)
    partition = partitions[0]
    exits: list[RecordedExit] = []

    def observe(exit: VmExit, outcome: Outcome, elapsed_ns: int) -> None:
        value = None
        if exit.reason is ExitReason.IO_INSTRUCTION:
            io = IoQualification.decode(exit.qualification)
            if io.direction is IoDirection.OUT and not io.string:
                rax = partition.vcpus[exit.vcpu].vcpu.read(U.UC_X86_REG_RAX)
                value = rax & ((1 << (8 * io.size)) - 1)
        exits.append(RecordedExit(exit, outcome, value, partition.clock.peek_ns()))

    partition.exit_observers.append(observe)
    if before_run is not None:
        before_run(partition)
    Runner(partitions, RunLimits(max_instructions=max_instructions, timeout_s=timeout_s)).run()
    if partition.disk is not None:
        partition.disk.close()
    result = partition.result
    assert result is not None, "the run loop ended without a result"
    return GuestRun(name, bytes(serial), result.exit_code, result.reason, partition, exits)


# --- QEMU ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QemuRun:
    serial: bytes
    status: int
    stderr: str


def qemu_available() -> bool:
    return shutil.which(QEMU) is not None


def run_qemu(image: bytes, timeout_s: float = 60.0, serial_input: bytes = b"",
             disk: Path | None = None, cpus: int = 1) -> QemuRun:
    """The same image under `qemu-system-x86_64 -kernel` (TCG), COM1 on stdin/stdout;
    `disk` a raw image file as the primary-master IDE disk (QEMU writes to it).

    Input is typed only once the guest has printed its first line, as a person would: bytes
    reaching QEMU's UART before the guest programs it are lost to its FIFO reset there, while
    vtemu's line delivers them when the guest asks (both are things real hardware does)."""
    with tempfile.TemporaryDirectory(prefix="vtemu-qemu-") as tmp:
        kernel = Path(tmp) / "kernel.bin"
        kernel.write_bytes(image)
        command = [QEMU, "-accel", "tcg", "-kernel", str(kernel), "-serial", "stdio",
                   "-display", "none", "-nodefaults", "-no-reboot", *DEBUG_EXIT_ARGS]
        if disk is not None:
            command += ["-drive", f"file={disk},format=raw,if=ide,index=0,media=disk"]
        if cpus != 1:
            command += ["-smp", str(cpus)]
        with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env={**os.environ, "LC_ALL": "C"}) as qemu:
            assert qemu.stdin is not None and qemu.stdout is not None
            deadline = time.monotonic() + timeout_s
            first = _read_first_line(qemu.stdout.fileno(), deadline) if serial_input else b""
            qemu.stdin.write(serial_input)
            qemu.stdin.close()
            qemu.stdin = None
            try:
                rest, stderr = qemu.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                qemu.kill()
                raise
    return QemuRun(first + rest, qemu.returncode, stderr.decode(errors="replace"))


def _read_first_line(fd: int, deadline: float) -> bytes:
    data = b""
    while b"\n" not in data:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 4096) if ready else b""
        if not chunk:
            break
        data += chunk
    return data
