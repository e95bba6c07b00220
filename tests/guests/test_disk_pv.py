"""disk, enlightened (-D PV) under --mode pv: the same workload over the VMBus-like channel's
synthetic storage, printed through the synthetic console, against the native build on the
emulated ATA disk."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.guests.harness import GuestRun, disk_image_bytes, guest_source, run_guest
from tests.guests.test_disk import SECTORS, WRITE_LBA, WRITTEN, expected_serial, pattern, phase_exits
from vtemu.asm import build_guest
from vtemu.hv.vmbus import vmbus_of
from vtemu.vmx.qualifications import IoQualification
from vtemu.vmx.reasons import ExitReason

ATA_PORTS = range(0x1F0, 0x1F8)
WORKLOAD_LINES = slice(4, 10)         # of the native output: the read 384 ... read across lines
POST_MESSAGE, SIGNAL_EVENT = 0x5C, 0x5D
BATCHES = 7                           # capacity, read, write, read-back, 8 x 8, past, across
CONSOLE_LINES = 9                     # console packets (one flush each)


def pv_image() -> bytes:
    return build_guest(guest_source("disk"), {"PV": "1"})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[GuestRun, Path, GuestRun, Path]:
    folder = tmp_path_factory.mktemp("disk-pv")
    native_path, pv_path = folder / "native.img", folder / "pv.img"
    for path in (native_path, pv_path):
        path.write_bytes(disk_image_bytes(SECTORS))
    native = run_guest("disk", disk=native_path)
    pv = run_guest("disk", image=pv_image(), disk=pv_path, mode="pv")
    return native, native_path, pv, pv_path


def test_the_workload_prints_the_same_lines(runs) -> None:
    native, _, pv, _ = runs
    native_lines = native.serial.split(b"\n")
    assert native.serial == expected_serial()
    assert pv.exit_code == 0
    assert pv.serial == (
        b"disk: synthetic storage over the VMBus-like channel\n"
        b"channels: storage 1, console 2\n"
        + f"capacity: {SECTORS} sectors ({SECTORS // 2048} MiB)\n".encode()
        + b"\n".join(native_lines[WORKLOAD_LINES]) + b"\n"
        b"interrupts: 6\n"
        b"disk: done\n")


def test_the_image_holds_the_same_data_both_ways(runs) -> None:
    _, native_path, _, pv_path = runs
    after = pv_path.read_bytes()
    assert after == native_path.read_bytes()
    start, end = WRITE_LBA * 512, (WRITE_LBA + WRITTEN) * 512
    assert after[start:end] == b"".join(pattern(lba) for lba in range(WRITE_LBA, WRITE_LBA + WRITTEN))
    assert after[:start] == disk_image_bytes(SECTORS)[:start]


def test_no_ata_port_is_touched_and_each_batch_is_one_signal(runs) -> None:
    _, _, pv, _ = runs
    ports = {IoQualification.decode(r.exit.qualification).port for r in pv.exits
             if r.reason is ExitReason.IO_INSTRUCTION}
    assert not ports & {*ATA_PORTS, 0x3F6}
    calls = pv.partition.hypercalls.calls
    assert calls[POST_MESSAGE] == 4                       # contact, offers, open x 2
    assert calls[SIGNAL_EVENT] == BATCHES + CONSOLE_LINES
    channel_bus = vmbus_of(pv.partition)
    assert channel_bus.host.stats.signals == BATCHES + CONSOLE_LINES
    assert channel_bus.host.stats.interrupts == 6         # read-back masked, message ring polled
    storage = channel_bus.host.channels[1].vsp
    assert storage.sectors_read == 384 + WRITTEN + 64 + 1
    assert storage.sectors_written == WRITTEN


def test_exits_per_phase(runs) -> None:
    """Native: 5 exits a sector by interrupt, 2 polled, 55 for READ MULTIPLE's 64 sectors;
    synthetic: the batch's signal and the console line's, whatever the transfer's size."""
    native, _, pv, _ = runs
    native_phases, pv_phases = phase_exits(native), phase_exits(pv)
    for phase in (0xD3, 0xD4, 0xD5, 0xD6):
        assert pv_phases[phase] == Counter({"VMCALL": 2}), hex(phase)
        assert sum(native_phases[phase].values()) > 25 * 2


def test_without_a_disk_no_storage_is_offered() -> None:
    run = run_guest("disk", image=pv_image(), mode="pv")
    assert run.serial == (b"disk: synthetic storage over the VMBus-like channel\n"
                          b"no disk: no synthetic storage offered\n")
    assert run.exit_code == 1


def test_the_enlightened_build_without_the_hypercall_interface() -> None:
    """Under vtx CPUID 40000001h is not "Hv#1": the guest says so and stops."""
    run = run_guest("disk", image=pv_image(), mode="vtx")
    assert run.serial == (b"disk: synthetic storage over the VMBus-like channel\n"
                          b"no hypercall interface: the enlightened build needs --mode pv\n")
    assert run.exit_code == 1


def test_shadow_paging_gives_the_same_run(runs, tmp_path: Path) -> None:
    _, _, pv, pv_path = runs
    path = tmp_path / "shadow.img"
    path.write_bytes(disk_image_bytes(SECTORS))
    shadow = run_guest("disk", image=pv_image(), disk=path, mode="pv", paging="shadow")
    assert (shadow.serial, shadow.exit_code) == (pv.serial, pv.exit_code)
    assert path.read_bytes() == pv_path.read_bytes()
