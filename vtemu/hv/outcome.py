"""What an exit handler tells the run loop; handlers never drive the loop themselves."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class RunEnd(IntEnum):
    """Process exit codes for endings other than the guest's isa-debug-exit value (README)."""

    BAD_INPUT = 2
    TRIPLE_FAULT = 70
    UNHANDLED_EXIT = 71
    INSTRUCTION_LIMIT = 72
    HALTED_FOREVER = 73
    TIMEOUT = 74
    INTERNAL_ERROR = 75
    INTERRUPTED = 130


@dataclass(frozen=True)
class Resume:
    """Re-enter the guest (VM entry), with whatever the handler injected."""


@dataclass(frozen=True)
class Halt:
    """The vCPU waits for an interrupt (the hypervisor's HLT emulation)."""


@dataclass(frozen=True)
class Shutdown:
    """The partition ends: a guest-requested exit code, or one of RunEnd with a reason."""

    exit_code: int
    reason: str
    dump: bool = False


Outcome = Resume | Halt | Shutdown

RESUME = Resume()
HALT = Halt()
