"""disk: the ATA disk on the primary channel (1F0h-1F7h, 3F6h, IRQ 14 as vector 2Eh), PIO.

The expected checksums are computed here from the image and the guest's write pattern, so the
guest's output is checked against the data itself; the QEMU differential test checks it
against a real IDE model too."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import pytest

from tests.guests.harness import (GUEST_DISK_SECTORS, GuestRun, disk_image_bytes, guest_source,
                                  run_guest)
from vtemu.asm import build_guest
from vtemu.hv.outcome import RunEnd
from vtemu.vmx.qualifications import IoDirection
from vtemu.vmx.reasons import ExitReason

SECTORS = GUEST_DISK_SECTORS["disk"]
WRITE_LBA, WRITTEN = 4096, 300
MULTIPLE = 64
PATTERN_MUL = 0x2545F491
ATA_VECTOR = 0x2E
PHASES = {0xD3: ("read by interrupt", 384), 0xD4: ("write by interrupt", WRITTEN),
          0xD5: ("read by polling", WRITTEN), 0xD6: ("READ MULTIPLE, blocks of 8", MULTIPLE)}


def pattern(lba: int) -> bytes:
    return struct.pack("<128I", *[((lba << 7 | i) * PATTERN_MUL) & 0xFFFFFFFF for i in range(128)])


def fnv1a_dwords(data: bytes) -> int:
    h = 0x811C9DC5
    for (dword,) in struct.iter_unpack("<I", data):
        h = ((h ^ dword) * 16777619) & 0xFFFFFFFF
    return h


def expected_serial(sectors: int = SECTORS) -> bytes:
    image = disk_image_bytes(sectors)
    written = b"".join(pattern(lba) for lba in range(WRITE_LBA, WRITE_LBA + WRITTEN))
    interrupts = 1 + 384 + WRITTEN + 1 + MULTIPLE // 8 + 1 + 2
    return (
        "disk: ATA primary master, PIO\n"
        "reset: error 01, signature 01 01 00 00\n"
        "device 1: status 00\n"
        f"identify: {sectors} sectors ({sectors // 2048} MiB), LBA supported\n"
        "read 384 sectors at LBA 0 by interrupt: checksum "
        f"{fnv1a_dwords(image[:384 * 512]):08x}\n"
        "wrote 300 sectors at LBA 4096 by interrupt\n"
        f"read back 300 sectors by polling, verified: checksum {fnv1a_dwords(written):08x}\n"
        "read multiple: 64 sectors in blocks of 8, verified: checksum "
        f"{fnv1a_dwords(written[:MULTIPLE * 512]):08x}\n"
        "read past the end: error\n"
        "read across the end: 1 sector, then error\n"
        f"interrupts: {interrupts}\n"
        "disk: done\n").encode()


@pytest.fixture(scope="module")
def disk_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[GuestRun, Path]:
    path = tmp_path_factory.mktemp("disk") / "disk.img"
    path.write_bytes(disk_image_bytes(SECTORS))
    return run_guest("disk", disk=path), path


def test_output_and_exit_status(disk_run: tuple[GuestRun, Path]) -> None:
    run, _ = disk_run
    assert run.serial == expected_serial()
    assert run.exit_code == 0


def test_the_image_holds_the_written_sectors_and_nothing_else_changed(
        disk_run: tuple[GuestRun, Path]) -> None:
    _, path = disk_run
    original = disk_image_bytes(SECTORS)
    after = path.read_bytes()
    assert len(after) == len(original)
    start, end = WRITE_LBA * 512, (WRITE_LBA + WRITTEN) * 512
    assert after[:start] == original[:start]
    assert after[end:] == original[end:]
    assert after[start:end] == b"".join(pattern(lba) for lba in range(WRITE_LBA,
                                                                     WRITE_LBA + WRITTEN))


def test_every_interrupt_is_irq_14_through_the_slave_pic(disk_run: tuple[GuestRun, Path]) -> None:
    run, _ = disk_run
    irqs = [r for r in run.exits if r.reason is ExitReason.EXTERNAL_INTERRUPT]
    assert {r.exit.interruption.vector for r in irqs} == {ATA_VECTOR}
    assert len(irqs) == run.partition.disk.interrupts == 697


def phase_exits(run: GuestRun) -> dict[int, Counter[str]]:
    """VM exits between the guest's POST codes, COM1 output left out, by kind."""
    phases: dict[int, Counter[str]] = {}
    phase = None
    for r in run.exits:
        io = r.io() if r.reason is ExitReason.IO_INSTRUCTION else None
        if io is not None and io.port == 0x80 and io.direction is IoDirection.OUT:
            phase = r.out_value
            continue
        if phase is None or (io is not None and 0x3F8 <= io.port <= 0x3FF):
            continue
        kind = r.reason.name if io is None else \
            f"{io.direction.name.lower()}{'s' if io.string else ''} {io.port:#x}"
        phases.setdefault(phase, Counter())[kind] += 1
    return phases


def test_exits_per_kib(disk_run: tuple[GuestRun, Path]) -> None:
    """Five exits a sector by interrupt (the interrupt, the status read that acknowledges it,
    two EOIs, one REP INSW/OUTSW); two by polling (one Alternate Status poll, since BSY is
    never seen, and the REP INSW); five per 8-sector block with READ MULTIPLE."""
    run, _ = disk_run
    phases = phase_exits(run)
    per_kib = {code: sum(phases[code].values()) / (sectors / 2)
               for code, (_, sectors) in PHASES.items()}
    assert phases[0xD3]["EXTERNAL_INTERRUPT"] == 384 and phases[0xD3]["ins 0x1f0"] == 384
    assert phases[0xD4]["outs 0x1f0"] == WRITTEN
    assert phases[0xD5]["EXTERNAL_INTERRUPT"] == 0
    assert 10.0 <= per_kib[0xD3] < 10.3
    assert 10.0 <= per_kib[0xD4] < 10.3
    assert 4.0 <= per_kib[0xD5] < 4.2
    assert 1.25 <= per_kib[0xD6] < 1.8


def test_model_string_printed_with_print_model(tmp_path: Path) -> None:
    """-D PRINT_MODEL adds IDENTIFY words 27-46 (QEMU prints "QEMU HARDDISK" there)."""
    image = build_guest(guest_source("disk"), {"PRINT_MODEL": None})
    path = tmp_path / "disk.img"
    path.write_bytes(disk_image_bytes(SECTORS))
    run = run_guest("disk", image=image, disk=path)
    lines = expected_serial().split(b"\n")
    lines.insert(4, b'model: "vtemu ATA disk"')
    assert run.serial == b"\n".join(lines)
    assert run.exit_code == 0


def test_without_a_disk_the_bus_floats() -> None:
    run = run_guest("disk")
    assert run.serial == b"disk: ATA primary master, PIO\nno disk: status reads FFh (floating bus)\n"
    assert run.exit_code == 1


def test_a_disk_too_small_for_the_guest(tmp_path: Path) -> None:
    path = tmp_path / "small.img"
    path.write_bytes(disk_image_bytes(4000))
    run = run_guest("disk", disk=path)
    assert run.serial.endswith(b"identify: 4000 sectors (1 MiB), LBA supported\n"
                               b"IDENTIFY DEVICE failed, or the disk has fewer than 4400 sectors\n")
    assert run.exit_code == 4
    assert path.read_bytes() == disk_image_bytes(4000)


def test_a_run_cut_short_keeps_every_completed_sector(tmp_path: Path) -> None:
    """Write-through: a run ended by the instruction limit in the middle of the writes leaves
    every sector whose data the guest finished in the file."""
    path = tmp_path / "disk.img"
    path.write_bytes(disk_image_bytes(SECTORS))
    run = run_guest("disk", disk=path, max_instructions=450_000)
    assert run.exit_code == RunEnd.INSTRUCTION_LIMIT
    assert b"wrote 300 sectors" not in run.serial and b"checksum" in run.serial
    after = path.read_bytes()
    written = [lba for lba in range(WRITE_LBA, WRITE_LBA + WRITTEN)
               if after[lba * 512:(lba + 1) * 512] == pattern(lba)]
    assert written and written == list(range(WRITE_LBA, WRITE_LBA + len(written)))
    untouched = disk_image_bytes(SECTORS)
    rest = WRITE_LBA + len(written)
    assert after[rest * 512:] == untouched[rest * 512:]
