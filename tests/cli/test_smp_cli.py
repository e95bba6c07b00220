"""--cpus, --slice and --ple on the command line: bad values are one line and exit 2; good
ones reach the partitions (several vCPUs, the scheduler's slice, PAUSE-loop exiting), and
several images are several partitions with prefixed output."""

from __future__ import annotations

from pathlib import Path

import pytest

from vtemu.cli import main
from vtemu.hv.outcome import RunEnd

GUESTS = Path(__file__).resolve().parents[2] / "guests"
HELLO = str(GUESTS / "hello.S")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """main's return code, or the code of the SystemExit argparse raises for a bad option."""
    try:
        code = main(list(argv))
    except SystemExit as exited:
        code = int(exited.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("option, value, complaint", [
    ("--cpus", "0", "must be positive"),
    ("--cpus", "-2", "must be positive"),
    ("--cpus", "two", "is not a number"),
    ("--cpus", "65", "at most 64"),
    ("--slice", "0", "must be positive"),
    ("--slice", "-100", "must be positive"),
    ("--slice", "1e3", "is not a number"),
])
def test_bad_smp_values_are_one_line_and_exit_2(capsys, option: str, value: str, complaint: str) -> None:
    code, out, err = _run(capsys, "run", HELLO, option, value)
    assert code == RunEnd.BAD_INPUT
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert option in lines[0] or "cpus" in lines[0]
    assert complaint in lines[0]


@pytest.mark.parametrize("argv", [("--ple=yes",), ("--cpus",), ("--slice",)])
def test_malformed_smp_options_are_one_line_and_exit_2(capsys, argv: tuple[str, ...]) -> None:
    code, out, err = _run(capsys, "run", HELLO, *argv)
    assert code == RunEnd.BAD_INPUT and out == ""
    assert len(err.strip().splitlines()) == 1, err


def test_cpus_slice_and_ple_reach_the_partition(capsys) -> None:
    code, out, err = _run(capsys, "run", str(GUESTS / "spinlock.S"), "--cpus", "4", "--slice", "5000",
                          "--ple", "--stats", "-D", "ITERATIONS=50")
    assert code == 0
    assert out == "spinlock: count 200 expected 200 spin iterations " + out.rsplit(" ", 1)[1]
    assert "scheduler: slice 5000 instructions" in err
    assert "pause-loop" in err and "PAUSE" in err


def test_two_partitions_print_their_own_prefixed_output(capsys) -> None:
    code, out, _ = _run(capsys, "run", HELLO, str(GUESTS / "smp_hello.S"), "--cpus", "2")
    assert code == 0
    lines = out.splitlines()
    assert "[hello] Hello from a vtemu guest!" in lines
    assert [line for line in lines if line.startswith("[smp_hello]")] == [
        "[smp_hello] smp_hello: MADT lists cpus: 2", "[smp_hello] cpu 0 up", "[smp_hello] cpu 1 up",
        "[smp_hello] all 2 cpus up; BSP x2APIC id 0"]
