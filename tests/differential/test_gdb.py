"""Stock gdb drives vtemu's stub (`vtemu run --gdb`) in batch mode.

Skipped when gdb is not installed (`apt-get install gdb`). vtemu runs as a subprocess on a
free loopback port; each test compares what gdb prints with vtemu's own view of the same
guest at the same point (a debugger Session stepped in-process).
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.debug.test_debugger_stepping import session_for

PROJECT = Path(__file__).resolve().parents[2]
HELLO = PROJECT / "guests" / "hello.S"
SPIN = """.include "multiboot.inc"
.code32
_start:
spin:
    jmp spin
MULTIBOOT_IMAGE_END 0x1000
"""

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"vtemu exited early: {process.stderr.read()}")  # type: ignore[union-attr]
        line = process.stderr.readline()  # type: ignore[union-attr]
        if "waiting for gdb" in line:
            return
    raise AssertionError("vtemu did not start listening")


def _gdb(image: Path, *commands: str, timeout: float = 60,
         interrupt_after: float | None = None) -> tuple[str, subprocess.Popen]:
    """gdb in batch mode against a fresh vtemu; `interrupt_after` seconds sends gdb a SIGINT,
    which it forwards to the stub as the interrupt byte (Ctrl-C)."""
    port = _free_port()
    vtemu = subprocess.Popen([sys.executable, "-m", "vtemu.cli", "run", str(image), "--gdb", f"127.0.0.1:{port}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT)
    try:
        _wait_for(port, vtemu)
        argv = ["gdb", "-batch", "-nx", "-ex", "set architecture i386:x86-64",
                "-ex", f"target remote 127.0.0.1:{port}"]
        for command in commands:
            argv += ["-ex", command]
        gdb = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if interrupt_after is not None:
            time.sleep(interrupt_after)
            gdb.send_signal(signal.SIGINT)
        output, _ = gdb.communicate(timeout=timeout)
        vtemu.wait(timeout=timeout)
    finally:
        if vtemu.poll() is None:
            vtemu.kill()
            vtemu.wait()
    return output, vtemu


def _register(output: str, name: str, occurrence: int = -1) -> int:
    values = re.findall(rf"^{name}\s+(0x[0-9a-f]+)", output, re.MULTILINE)
    return int(values[occurrence], 16)


def test_breakpoint_stepi_registers_and_memory_match_vtemus_view() -> None:
    output, vtemu = _gdb(HELLO, "info registers rip", "stepi", "info registers rip",
                         "break *0x100039", "continue", "info registers rip rax rdx rsp",
                         "x/4xw 0x100000", "stepi", "info registers rip", "monitor exits 1",
                         "reverse-stepi", "info registers rip", "delete", "continue")
    assert _register(output, "rip", 0) == 0xFFFFFFF0           # linear: CS.base + IP at reset
    assert _register(output, "rip", 1) == 0xF0000              # one instruction: the far jump
    assert "Breakpoint 1, 0x0000000000100039" in output
    own = session_for("hello")
    own.breakpoints.add(0x100039)
    own.cont()
    import unicorn.x86_const as U
    for name, register in (("rax", U.UC_X86_REG_RAX), ("rdx", U.UC_X86_REG_RDX), ("rsp", U.UC_X86_REG_RSP)):
        assert _register(output, name) == own.vcpu.read(register)
    words = [int.from_bytes(own.vcpu.read_linear(0x100000 + 4 * i, 4), "little") for i in range(4)]
    assert "0x100000:\t" + "\t".join(f"{word:#010x}" for word in words) in output
    assert _register(output, "rip", 3) == 0x10003A              # after the OUT
    assert "IO_INSTRUCTION(30) rip=0x100039" in output          # monitor exits
    assert _register(output, "rip", 4) == 0x100039              # reverse-stepi
    assert "exited normally" in output
    assert vtemu.returncode == 0 and "Hello from a vtemu guest!" in vtemu.stdout.read()  # type: ignore[union-attr]


def test_an_interrupt_stops_a_spinning_guest(tmp_path) -> None:
    spin = tmp_path / "spin.S"
    spin.write_text(SPIN)
    output, _ = _gdb(spin, "continue", "x/i $pc", "stepi", "x/i $pc", "kill", interrupt_after=3)
    assert "received signal SIGINT" in output
    pcs = re.findall(r"=> (0x[0-9a-f]+):\s+jmp\s+(0x[0-9a-f]+)", output)
    assert len(pcs) == 2 and pcs[0] == pcs[1] and pcs[0][0] == pcs[0][1]   # jmp $, and stepi stays


def test_a_read_watchpoint_reports_the_access(tmp_path) -> None:
    from tests.guests.harness import guest_image
    greeting = 0x100000 + guest_image("hello").index(b"Hello from")
    output, _ = _gdb(HELLO, f"rwatch *(char *){greeting + 1:#x}", "continue", "info registers rsi",
                     "delete", "continue")
    assert f"Hardware read watchpoint 1: *(char *){greeting + 1:#x}" in output
    assert _register(output, "rsi") == greeting + 2
    assert "exited normally" in output
