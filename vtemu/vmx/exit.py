"""A VM exit, decoded once into a typed, frozen record (SDM Vol. 3C 27.2)."""

from __future__ import annotations

from enum import Enum, IntEnum
from typing import NamedTuple, TypeVar

from vtemu.machine.decode import Instruction
from vtemu.vmx.interruption import InterruptionInfo
from vtemu.vmx.reasons import ExitReason

Q = TypeVar("Q")


class Activity(IntEnum):
    """Guest activity state (SDM 24.4.2)."""

    ACTIVE = 0
    HLT = 1
    SHUTDOWN = 2
    WAIT_FOR_SIPI = 3


class ExitDecision(Enum):
    """What the hypervisor wants after handling an exit (its handlers' outcome, as the CPU sees it)."""

    RESUME = "resume"   # VM entry
    HALT = "halt"       # keep the vCPU out of the guest until an interrupt is pending
    STOP = "stop"       # the partition is over


class VmExit(NamedTuple):
    """Immutable like the hardware's record of an exit; a NamedTuple because exits are hot
    (creating a frozen dataclass costs several times more) and nothing may change one."""

    reason: ExitReason
    guest_rip: int
    qualification: int = 0
    instruction_length: int = 0
    guest_linear: int | None = None
    guest_physical: int | None = None
    instruction_info: int = 0
    interruption: InterruptionInfo | None = None
    interruption_error: int | None = None
    idt_vectoring: InterruptionInfo | None = None
    idt_vectoring_error: int | None = None
    entry_failure: bool = False
    detail: str | None = None
    instruction: Instruction | None = None
    completes_natively: bool = False
    sequence: int = 0
    vcpu: int = 0
    instructions: int = 0
    callout: bool = False       # a binary translator's call into the hypervisor, not a VM exit

    def decoded(self, layout: type[Q]) -> Q:
        """The qualification in one of vmx/qualifications.py's typed layouts."""
        return layout.decode(self.qualification)  # type: ignore[attr-defined]

    @property
    def name(self) -> str:
        return self.reason.name

    def describe(self) -> str:
        """One line for dumps and debugger output."""
        parts = [f"#{self.sequence}", f"vcpu{self.vcpu}", f"{self.reason.name}({int(self.reason)})",
                 f"rip={self.guest_rip:#x}"]
        if self.detail:
            parts.append(self.detail)
        if self.qualification:
            parts.append(f"qual={self.qualification:#x}")
        if self.guest_physical is not None:
            parts.append(f"gpa={self.guest_physical:#x}")
        if self.interruption is not None:
            parts.append(f"vector={self.interruption.vector}")
        return " ".join(parts)
