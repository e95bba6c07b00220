"""INVD (13), WBINVD (54), INVLPG (14): nothing to emulate beyond completing them (PAUSE: smp.py).

vtemu models no caches, so invalidation has no effect; INVLPG under EPT only needs the vCPU's
TLB entry for the page dropped, which the hypervisor does by flushing the vCPU's TLB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtemu.hv.handlers.common import done
from vtemu.hv.outcome import Outcome
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit


def handle_complete(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    return done(exit, cpu)


def handle_invlpg(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    cpu.vcpu.flush_tlb()
    return done(exit, cpu)


HANDLERS = {ExitReason.INVD: handle_complete, ExitReason.WBINVD: handle_complete,
            ExitReason.INVLPG: handle_invlpg}
