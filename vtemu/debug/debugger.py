"""`vtemu debug`: the VM-exit debugger's prompt, interactive or from a command file.

Line-oriented on purpose, so it reads the same in a plain terminal, under tmux, in a pipe
and in a log: a prompt, one command, its lines. Colours (ANSI, stop lines and the current
instruction) only when the output is a terminal. Ctrl-C while the guest runs stops it at
the next instruction and returns to the prompt; Ctrl-D or `q` leaves.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TextIO

from vtemu.debug.commands import Commands
from vtemu.debug.stepping import Build, Session
from vtemu.errors import VtemuError

PROMPT = "(vtemu) "
_BOLD_YELLOW, _CYAN, _RESET = "\x1b[1;33m", "\x1b[36m", "\x1b[0m"


def build_for(specs: list, firmware: bytes) -> Build:
    """A Build that makes the same fresh machine each time (reverse execution re-runs it)."""
    from vtemu.hv.boot import build_partitions

    def build(console: Callable[[bytes], None]) -> list:
        return build_partitions(specs, firmware, lambda index, spec: console)
    return build


class Debugger:
    def __init__(self, session: Session, out: TextIO, colour: bool) -> None:
        self.session = session
        self.commands = Commands(session)
        self.out = out
        self.colour = colour

    def run(self, lines: Iterable[str], echo: bool) -> int:
        """Execute commands until they run out or `q`; returns the exit status (0)."""
        for line in lines:
            if echo:
                self._print(PROMPT + line.rstrip("\n"))
            if not self.execute(line):
                break
        return 0

    def interactive(self) -> int:
        while True:
            try:
                line = input(PROMPT)
            except EOFError:
                self.out.write("\n")
                return 0
            except KeyboardInterrupt:
                self.out.write("\n")
                continue
            if not self.execute(line):
                return 0

    def execute(self, line: str) -> bool:
        """One command; False when it asks to quit. Errors are one line, never a traceback."""
        try:
            with self._interruptible():
                result = self.commands.execute(line)
        except VtemuError as error:
            self._print(f"error: {error}")
            return True
        for text in result.lines:
            self._print(self._paint(text))
        return not result.quit

    @contextmanager
    def _interruptible(self) -> Iterator[None]:
        """Ctrl-C stops the guest (the session checks before every instruction)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, lambda *_: self.session.interrupt())
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _paint(self, text: str) -> str:
        if not self.colour:
            return text
        if text.startswith(("stopped", "stepped", "at reset")):
            return _BOLD_YELLOW + text + _RESET
        if text.startswith("=>"):
            return _CYAN + text + _RESET
        return text

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def console_to(stream: TextIO) -> Callable[[bytes], None]:
    """Guest COM1 output, interleaved with the debugger's lines."""
    def write(data: bytes) -> None:
        stream.write(data.decode("latin-1"))
        stream.flush()
    return write
