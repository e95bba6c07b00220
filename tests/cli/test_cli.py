"""The command line: one-line errors for bad input, defined endings for misbehaving guests."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_missing_image_is_one_line(capsys) -> None:
    code, _, err = _run(capsys, "run", "/nonexistent/kernel.bin")
    assert code == RunEnd.BAD_INPUT
    assert "no such file" in _single_line_error(err)


def test_file_without_multiboot_header_is_rejected_before_booting(capsys, tmp_path) -> None:
    image = tmp_path / "junk.bin"
    image.write_bytes(b"\x90" * 512)
    code, out, err = _run(capsys, "run", str(image))
    assert code == RunEnd.BAD_INPUT
    assert out == ""
    assert "multiboot" in _single_line_error(err).lower()


def test_assembly_error_names_file_and_line(capsys, tmp_path) -> None:
    source = tmp_path / "bad.S"
    source.write_text('.include "multiboot.inc"\n_start:\n    movx eax, 1\nMULTIBOOT_IMAGE_END\n')
    code, _, err = _run(capsys, "run", str(source))
    assert code == RunEnd.BAD_INPUT
    assert f"{source}:3" in _single_line_error(err)


def test_memory_out_of_range(capsys) -> None:
    code, _, err = _run(capsys, "run", str(GUESTS / "hello.S"), "--memory", "1")
    assert code == RunEnd.BAD_INPUT
    assert "--memory" in _single_line_error(err)


def test_unknown_mode(capsys) -> None:
    code, _, err = _run(capsys, "run", str(GUESTS / "hello.S"), "--mode", "magic")
    assert code == RunEnd.BAD_INPUT
    assert "unknown mode 'magic'" in _single_line_error(err)


def test_hello_prints_and_exits_with_its_value(capsys) -> None:
    code, out, err = _run(capsys, "run", str(GUESTS / "hello.S"))
    assert (code, out, err) == (0, "Hello from a vtemu guest!\n", "")


def test_stats_go_to_stderr(capsys) -> None:
    code, out, err = _run(capsys, "run", str(GUESTS / "hello.S"), "--stats")
    assert code == 0 and out == "Hello from a vtemu guest!\n"
    assert "IO_INSTRUCTION" in err and "out 0x3f8" in err


def test_instruction_limit_ends_a_spinning_guest(capsys, tmp_path) -> None:
    source = tmp_path / "spin.S"
    source.write_text('.include "multiboot.inc"\n_start:\n    jmp _start\nMULTIBOOT_IMAGE_END\n')
    code, _, err = _run(capsys, "run", str(source), "--max-instructions", "100000")
    assert code == RunEnd.INSTRUCTION_LIMIT
    assert "instruction limit of 100000 reached" in err
    assert "last" in err and "VM exits" in err  # the state dump


def test_halt_with_interrupts_off_is_a_defined_ending(capsys, tmp_path) -> None:
    source = tmp_path / "dead.S"
    source.write_text('.include "multiboot.inc"\n_start:\n    cli\n    hlt\nMULTIBOOT_IMAGE_END\n')
    code, _, err = _run(capsys, "run", str(source))
    assert code == RunEnd.HALTED_FOREVER
    assert "halted" in err


def test_wall_clock_timeout_ends_a_spinning_guest(capsys, tmp_path) -> None:
    source = tmp_path / "spin.S"
    source.write_text('.include "multiboot.inc"\n_start:\n    jmp _start\nMULTIBOOT_IMAGE_END\n')
    code, _, err = _run(capsys, "run", str(source), "--timeout", "0.5")
    assert code == RunEnd.TIMEOUT
    assert "timeout" in err


def test_asm_writes_a_bootable_image(capsys, tmp_path) -> None:
    image = tmp_path / "hello.bin"
    assert _run(capsys, "asm", str(GUESTS / "hello.S"), "-o", str(image))[0] == 0
    code, out, _ = _run(capsys, "run", str(image))
    assert (code, out) == (0, "Hello from a vtemu guest!\n")


def test_serial_input_from_a_file_reaches_the_guest(capsys, tmp_path) -> None:
    typed = tmp_path / "typed.txt"
    typed.write_bytes(b"one\ntwo\nquit\n")
    code, out, _ = _run(capsys, "run", str(GUESTS / "echo.S"), "--serial-in", str(typed))
    assert out.endswith("> ONE\n> TWO\n> QUIT\necho: 3 lines\n")
    assert code == 3


def test_serial_input_from_stdin(tmp_path) -> None:
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "vtemu.cli", "run", str(GUESTS / "echo.S"),
                           "--serial-in", "-"], input=b"piped\nquit\n", capture_output=True,
                          timeout=120)
    assert done.stdout.endswith(b"> PIPED\n> QUIT\necho: 2 lines\n"), done.stderr
    assert done.returncode == 2


def test_missing_serial_input_file_is_one_line(capsys, tmp_path) -> None:
    code, out, err = _run(capsys, "run", str(GUESTS / "hello.S"), "--serial-in",
                          str(tmp_path / "absent"))
    assert code == RunEnd.BAD_INPUT and out == ""
    assert "no such file" in _single_line_error(err)
