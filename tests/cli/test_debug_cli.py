"""`vtemu debug -x FILE`: the debugger's commands from a file, output on stdout."""

from __future__ import annotations

from pathlib import Path

import pytest

from vtemu.cli import main
from vtemu.hv.outcome import RunEnd

GUESTS = Path(__file__).resolve().parents[2] / "guests"
HELLO = str(GUESTS / "hello.S")


def _debug(capsys: pytest.CaptureFixture[str], tmp_path: Path, script: str, *extra: str
           ) -> tuple[int, list[str], str]:
    commands = tmp_path / "steps.txt"
    commands.write_text(script)
    code = main(["debug", HELLO, "-x", str(commands), *extra])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_batch_commands_print_their_results_on_stdout(capsys, tmp_path) -> None:
    code, lines, err = _debug(capsys, tmp_path, "si 1\nbe io port=0x3f8\nc\nrs 1\nsi 1\nq\nsi 1\n")
    assert code == 0 and err == ""
    assert lines[0] == "(vtemu) si 1"
    assert lines[1] == "stepped"
    assert lines[2].startswith("  position 1, 1 instructions, real mode")
    assert "\x1b[" not in "".join(lines)             # no colours off a terminal
    stop = lines.index("stopped: exit: exit breakpoint `io port=0x3f8`")
    assert "IO_INSTRUCTION(30)" in lines[stop + 1] and "port=0x3f8" in lines[stop + 1]
    assert lines.count("(vtemu) si 1") == 2           # nothing runs after `q`
    assert lines[-1] == "(vtemu) q" and lines[-2].startswith("=> 0x")


def test_guest_output_appears_and_the_end_is_reported(capsys, tmp_path) -> None:
    code, lines, _ = _debug(capsys, tmp_path, "c\nregs\n")
    assert code == 0
    assert "Hello from a vtemu guest!" in lines
    assert any(line.startswith("stopped: guest ended: the guest wrote to isa-debug-exit") for line in lines)
    assert any(line.startswith("rip ") for line in lines)


def test_a_bad_command_is_one_error_line_and_the_script_goes_on(capsys, tmp_path) -> None:
    code, lines, _ = _debug(capsys, tmp_path, "frobnicate\nx/2q nowhere\nsi 2\n")
    assert code == 0
    assert lines[1] == "error: unknown command 'frobnicate' (try help)"
    assert lines[3] == "error: 'nowhere' is not a number"
    assert lines[5] == "stepped"


def test_bad_input_to_debug_is_one_line_and_status_2(capsys, tmp_path) -> None:
    code = main(["debug", HELLO, "-x", str(tmp_path / "missing.txt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == RunEnd.BAD_INPUT and len(err) == 1 and "missing.txt" in err[0]
    code = main(["debug", HELLO, "--disk", str(tmp_path / "x.img")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == RunEnd.BAD_INPUT and err == [
        "vtemu: --disk is not available under the debugger (runs must re-execute exactly)"]
