"""`vtemu run guests/disk.S --disk FILE --mode pv`: the source is assembled enlightened and the
workload runs over the synthetic storage channel, with --stats showing the hypercalls."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guests.harness import disk_image_bytes
from tests.guests.test_disk import SECTORS, WRITE_LBA, WRITTEN, pattern
from vtemu.cli import main

DISK = Path(__file__).resolve().parents[2] / "guests" / "disk.S"


def test_disk_over_the_channel_from_the_command_line(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(disk_image_bytes(SECTORS))
    code = main(["run", str(DISK), "--disk", str(image), "--mode", "pv", "--stats"])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.startswith("disk: synthetic storage over the VMBus-like channel\n")
    assert captured.out.endswith("disk: done\n")
    assert "hypercall 0x5d" in captured.err and "hypercall 0x5c" in captured.err
    start = WRITE_LBA * 512
    assert image.read_bytes()[start:start + WRITTEN * 512] == \
        b"".join(pattern(lba) for lba in range(WRITE_LBA, WRITE_LBA + WRITTEN))
