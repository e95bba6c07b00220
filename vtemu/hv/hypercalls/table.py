"""The hypercall dispatch table: call code -> Hypercall (handler + what the call accepts).

A handler is `handler(partition, cpu, call) -> HypercallResult` where `call` is the decoded
HypercallInput. It validates every argument and raises HypercallError(status) (or returns
a result with that status) for anything unusable; the dispatcher (service.py) has already
checked what the table entry declares: the call code exists, reserved bits are zero, the fast
bit and rep count fit the call, the variable header size is allowed, and memory parameter
GPAs are 8-byte aligned (TLFS "Hypercall Inputs").

Registering a call (the VMBus channel does this for 005Ch/005Dh):

    from vtemu.hv.hypercalls import HypercallResult, register
    register(0x005C, "HvCallPostMessage", handle_post_message, fast=False)

`register` adds to the default table every partition in `--mode pv` copies when it is built;
`partition.hypercalls.table` is that partition's own copy (tests may add to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from vtemu.hv.hypercalls.abi import HvStatus, HypercallInput
from vtemu.hv.outcome import Outcome

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu

VTEMU_FIRST_CODE = 0x8001        # vtemu's own calls: 8001h-80FFh (TLFS codes stay below 8000h)
VTEMU_LAST_CODE = 0x80FF


@dataclass(frozen=True)
class HypercallResult:
    """What a hypercall did: its status, for a rep call how many reps are done (the absolute
    index reached, TLFS "Hypercall Outputs"), and optionally what the vCPU does next (Shutdown, Halt)."""

    status: HvStatus = HvStatus.SUCCESS
    reps_completed: int = 0
    outcome: Outcome | None = None


SUCCESS = HypercallResult()

HypercallHandler = Callable[["Partition", "VmxCpu", HypercallInput], HypercallResult]


@dataclass(frozen=True)
class Hypercall:
    """One call code: its handler and the shapes of input it accepts (TLFS "Hypercall
    Classes": simple or rep; fast or memory)."""

    code: int
    name: str
    handler: HypercallHandler
    rep: bool = False             # a rep call: rep count > 0, reps processed from rep start
    fast: bool = True             # may be issued as a fast (register) call
    memory: bool = True           # may be issued with memory parameters
    variable_header: bool = False  # accepts a nonzero variable header size


HYPERCALLS: dict[int, Hypercall] = {}


def register(code: int, name: str, handler: HypercallHandler, *, rep: bool = False,
             fast: bool = True, memory: bool = True, variable_header: bool = False,
             table: dict[int, Hypercall] | None = None) -> Hypercall:
    """Add a call to `table` (default: the table every pv partition starts from)."""
    if not 0 < code <= 0xFFFF:
        raise ValueError(f"hypercall code {code:#x} is not a 16-bit call code")
    target = HYPERCALLS if table is None else table
    if code in target:
        raise ValueError(f"hypercall code {code:#06x} is already {target[code].name}")
    entry = Hypercall(code, name, handler, rep=rep, fast=fast, memory=memory,
                      variable_header=variable_header)
    target[code] = entry
    return entry
