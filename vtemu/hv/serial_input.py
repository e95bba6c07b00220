"""The host end of COM1's receive line: a file, a pipe or a terminal.

Files and pipes are read as a byte stream and handed to the UART whenever it asks, waiting
for the writer if need be: the guest then sees the same bytes at the same instructions on
every run (the UART asks at guest-driven points). A terminal cannot be waited on without
freezing a guest that merely polls, so it is read only for what has been typed, except when
every vCPU is halted waiting for input; interactive runs are reproducible only in what the
guest does with each byte, not in when it arrives. The terminal is put in cbreak mode (no
line editing or local echo: the guest echoes) for the run and restored after.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import tty
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from vtemu.errors import BadInput

POLL_S = 0.1          # how often a waiting read checks whether the run was aborted


class SerialInput:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.interactive = os.isatty(fd)
        self.cancelled: Callable[[], bool] = lambda: False
        self._pending = bytearray()
        self._offset = 0
        self._ended = False

    def __call__(self, block: bool) -> int | None:
        if self._offset == len(self._pending) and not self._ended:
            self._fill(wait=block or not self.interactive)
        if self._offset == len(self._pending):
            return None
        byte = self._pending[self._offset]
        self._offset += 1
        return byte

    def _fill(self, wait: bool) -> None:
        self._pending.clear()
        self._offset = 0
        while not self.cancelled():
            ready, _, _ = select.select([self._fd], [], [], POLL_S if wait else 0)
            if ready:
                data = os.read(self._fd, 4096)
                self._ended = not data
                self._pending += data
                return
            if not wait:
                return


@contextmanager
def open_serial_input(path: str | None) -> Iterator[SerialInput | None]:
    """`-` is stdin; None means no input (the line stays idle)."""
    if path is None:
        yield None
        return
    if path == "-":
        fd = sys.stdin.fileno()
        with _cbreak(fd):
            yield SerialInput(fd)
        return
    try:
        fd = os.open(Path(path), os.O_RDONLY)
    except OSError as error:
        raise BadInput(f"{path}: {error.strerror.lower()}") from None
    try:
        yield SerialInput(fd)
    finally:
        os.close(fd)


@contextmanager
def _cbreak(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
