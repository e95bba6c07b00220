"""`vtemu run --disk FILE`: the primary-master ATA disk; unusable images are one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.guests.harness import disk_image_bytes
from vtemu.cli import main
from vtemu.hv.outcome import RunEnd

GUESTS = Path(__file__).resolve().parents[2] / "guests"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _single_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("size, message", [
    (0, "is empty"),
    (513, "is not a multiple of 512"),
    (4096 + 100, "is not a multiple of 512"),
])
def test_bad_image_size(capsys, tmp_path: Path, size: int, message: str) -> None:
    image = tmp_path / "bad.img"
    image.write_bytes(b"\0" * size)
    code, out, err = _run(capsys, "run", str(GUESTS / "hello.S"), "--disk", str(image))
    assert code == RunEnd.BAD_INPUT
    assert out == ""
    line = _single_line_error(err)
    assert str(image) in line and message in line


def test_missing_image(capsys, tmp_path: Path) -> None:
    code, out, err = _run(capsys, "run", str(GUESTS / "hello.S"),
                          "--disk", str(tmp_path / "missing.img"))
    assert code == RunEnd.BAD_INPUT and out == ""
    assert "no such file" in _single_line_error(err)


def test_directory_as_image(capsys, tmp_path: Path) -> None:
    code, _, err = _run(capsys, "run", str(GUESTS / "hello.S"), "--disk", str(tmp_path))
    assert code == RunEnd.BAD_INPUT
    assert "is a directory" in _single_line_error(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may open any file for writing")
def test_read_only_image(capsys, tmp_path: Path) -> None:
    image = tmp_path / "ro.img"
    image.write_bytes(b"\0" * 4096)
    image.chmod(0o444)
    code, _, err = _run(capsys, "run", str(GUESTS / "hello.S"), "--disk", str(image))
    assert code == RunEnd.BAD_INPUT
    assert "permission denied" in _single_line_error(err)


def test_unreadable_image(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root ignores file modes, so the refusal is simulated where the image is opened."""
    from vtemu.devices import ata_disk
    image = tmp_path / "locked.img"
    image.write_bytes(b"\0" * 4096)
    real_open = os.open

    def refuse(path, flags, *args):
        if os.fspath(path) == str(image):
            raise PermissionError(13, "Permission denied", str(image))
        return real_open(path, flags, *args)
    monkeypatch.setattr(ata_disk.os, "open", refuse)
    code, _, err = _run(capsys, "run", str(GUESTS / "hello.S"), "--disk", str(image))
    assert code == RunEnd.BAD_INPUT
    assert "permission denied" in _single_line_error(err)


def test_disk_guest_runs_and_writes_the_image(capsys, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    original = disk_image_bytes(8192)
    image.write_bytes(original)
    code, out, err = _run(capsys, "run", str(GUESTS / "disk.S"), "--disk", str(image), "--stats")
    assert code == 0
    assert out.startswith("disk: ATA primary master, PIO\n") and out.endswith("disk: done\n")
    assert "0x1f0" in err and "EXTERNAL_INTERRUPT" in err
    after = image.read_bytes()
    assert len(after) == len(original) and after != original


def test_a_guest_that_ignores_the_disk_leaves_it_alone(capsys, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\x5a" * 8192)
    code, out, _ = _run(capsys, "run", str(GUESTS / "hello.S"), "--disk", str(image))
    assert (code, out) == (0, "Hello from a vtemu guest!\n")
    assert image.read_bytes() == b"\x5a" * 8192
