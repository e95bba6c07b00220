"""MOV DR (29): debug registers are the guest's; the hypervisor performs the move for it.

Checks follow SDM Vol. 2 MOV DR and Vol. 3B 17.2: DR4/DR5 alias DR6/DR7 unless CR4.DE makes
them #UD, and in 64-bit mode a write of bits 63:32 of DR6 or DR7 is #GP(0). (CPL > 0 faults
before the exit, SDM 26.1.1, so the handler never sees it.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import unicorn.x86_const as U

from vtemu.hv.handlers.common import GP, UD, done, inject_exception, read_gpr, write_gpr
from vtemu.hv.outcome import Outcome
from vtemu.vmx.qualifications import MovDrDirection, MovDrQualification
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit

CR4_DE = 1 << 3
_DEBUG = {n: getattr(U, f"UC_X86_REG_DR{n}") for n in range(8)}


def handle_mov_dr(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    move = exit.decoded(MovDrQualification)
    dr = move.dr
    if dr in (4, 5):
        if cpu.vcpu.read(U.UC_X86_REG_CR4) & CR4_DE:
            return inject_exception(cpu, UD)
        dr += 2
    register = _DEBUG[dr]
    if move.direction is MovDrDirection.TO_DR:
        value = read_gpr(cpu, move.gpr)
        if dr >= 6 and value >> 32:
            return inject_exception(cpu, GP, 0)
        cpu.vcpu.write(register, _with_fixed_bits(dr, value))
    else:
        write_gpr(cpu, move.gpr, cpu.vcpu.read(register))
    return done(exit, cpu)


def _with_fixed_bits(dr: int, value: int) -> int:
    """DR6 bits 31:16 and 11:4 read as 1, bit 12 as 0; DR7 bit 10 as 1, bits 15:14, 12 and 11
    (RTM, not supported) as 0 (SDM Vol. 3B 17.2.3, 17.2.4)."""
    if dr == 6:
        return (value | 0xFFFF0FF0) & ~0x1000 & 0xFFFFFFFF
    if dr == 7:
        return (value | 0x400) & ~0xD800
    return value


HANDLERS = {ExitReason.MOV_DR: handle_mov_dr}
