"""The command line of the enlightened builds: `vtemu asm --pv`, and `vtemu run X.S --mode pv`
assembling the PV=1 variant by itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from vtemu.cli import main

GUESTS = Path(__file__).resolve().parents[2] / "guests"
PV_EXIT_NOT_ENLIGHTENED = 63


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_asm_pv_builds_the_enlightened_image(capsys, tmp_path: Path) -> None:
    native, enlightened = tmp_path / "hello.bin", tmp_path / "hello.pv.bin"
    assert _run(capsys, "asm", str(GUESTS / "hello.S"), "-o", str(native))[0] == 0
    assert _run(capsys, "asm", "--pv", str(GUESTS / "hello.S"), "-o", str(enlightened))[0] == 0
    assert native.read_bytes() != enlightened.read_bytes()
    code, out, _ = _run(capsys, "run", str(enlightened), "--mode", "pv")
    assert (code, out) == (0, "Hello from a vtemu guest!\n")
    code, out, _ = _run(capsys, "run", str(enlightened), "--mode", "vtx")
    assert (code, out) == (PV_EXIT_NOT_ENLIGHTENED, "")


def test_run_source_in_pv_mode_assembles_the_enlightened_build(capsys) -> None:
    code, out, err = _run(capsys, "run", str(GUESTS / "hello.S"), "--mode", "pv", "--stats")
    assert (code, out) == (0, "Hello from a vtemu guest!\n")
    assert "hypercall 0x8002" in err and "out 0x3f8" not in err


def test_a_native_guest_runs_unchanged_in_pv_mode(capsys) -> None:
    code, out, _ = _run(capsys, "run", str(GUESTS / "longmode.S"), "--mode", "pv")
    native_code, native_out, _ = _run(capsys, "run", str(GUESTS / "longmode.S"), "--mode", "vtx")
    assert (code, out) == (native_code, native_out)
