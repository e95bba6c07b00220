"""VMCALL (18), the VMX instructions (19-27, 50, 53, 59), XSETBV (55), MONITOR/MWAIT, RDPMC.

vtemu offers no nested VMX and, in this mode, no hypercall interface: like a processor
without VMX, the guest gets #UD (SDM Vol. 2 VMX instruction references). XSETBV is #UD
because CR4.OSXSAVE can never be set (CPUID reports no XSAVE).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtemu.hv.handlers.common import GP, UD, inject_exception
from vtemu.hv.outcome import Outcome
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit


def handle_undefined(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    return inject_exception(cpu, UD)


HANDLERS = {reason: handle_undefined for reason in (
    ExitReason.VMCALL, ExitReason.VMCLEAR, ExitReason.VMLAUNCH, ExitReason.VMPTRLD,
    ExitReason.VMPTRST, ExitReason.VMREAD, ExitReason.VMRESUME, ExitReason.VMWRITE,
    ExitReason.VMXOFF, ExitReason.VMXON, ExitReason.INVEPT, ExitReason.INVVPID,
    ExitReason.VMFUNC, ExitReason.XSETBV, ExitReason.MONITOR, ExitReason.MWAIT)}


def handle_rdpmc(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    """No performance counters are offered (CPUID leaf 0AH is empty): any index is #GP(0)."""
    return inject_exception(cpu, GP, 0)


HANDLERS[ExitReason.RDPMC] = handle_rdpmc
