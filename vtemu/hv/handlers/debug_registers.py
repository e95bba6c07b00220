"""MOV DR (29): debug registers are the guest's; the hypervisor performs the move for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import unicorn.x86_const as U

from vtemu.hv.handlers.common import done, read_gpr, write_gpr
from vtemu.hv.outcome import Outcome
from vtemu.vmx.qualifications import MovDrDirection, MovDrQualification
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit

_DEBUG = {n: getattr(U, f"UC_X86_REG_DR{n}") for n in range(8)}


def handle_mov_dr(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    move = exit.decoded(MovDrQualification)
    register = _DEBUG[move.dr]
    if move.direction is MovDrDirection.TO_DR:
        cpu.vcpu.write(register, read_gpr(cpu, move.gpr))
    else:
        write_gpr(cpu, move.gpr, cpu.vcpu.read(register))
    return done(exit, cpu)


HANDLERS = {ExitReason.MOV_DR: handle_mov_dr}
