"""EPT violations (48) and misconfigurations (49).

A guest-physical access the EPT does not allow is MMIO (a device on the partition's MMIO
bus), open bus (unbacked guest-physical space: reads return all ones, writes vanish, as on
a PC) or a write to the firmware ROM (discarded). The faulting instruction is decoded and
emulated (hv/mmio.py) and the guest continues after it. A misconfiguration means the
hypervisor built a bad EPT: the run ends with a dump.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtemu.hv.mmio import EmulationError, emulate_access
from vtemu.hv.outcome import RESUME, Outcome, RunEnd, Shutdown
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit

FETCH = 1 << 2
LINEAR_VALID = 1 << 7
FINAL_TRANSLATION = 1 << 8   # set: the access itself; clear (with bit 7): a guest page-table access


def handle_ept_violation(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    gpa = exit.guest_physical or 0
    if exit.qualification & FETCH:
        return Shutdown(RunEnd.UNHANDLED_EXIT,
                        f"guest executed from unbacked guest-physical memory at {gpa:#x}", dump=True)
    if exit.qualification & LINEAR_VALID and not exit.qualification & FINAL_TRANSLATION:
        return Shutdown(RunEnd.UNHANDLED_EXIT,
                        f"guest page tables live in unbacked guest-physical memory at {gpa:#x}",
                        dump=True)
    try:
        emulate_access(cpu, partition, exit)
    except EmulationError as error:
        return Shutdown(RunEnd.UNHANDLED_EXIT, f"EPT violation at {gpa:#x}: {error}", dump=True)
    return RESUME


def handle_ept_misconfig(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    return Shutdown(RunEnd.UNHANDLED_EXIT,
                    f"EPT misconfiguration at {exit.guest_physical or 0:#x} (hypervisor bug)", dump=True)


HANDLERS = {ExitReason.EPT_VIOLATION: handle_ept_violation,
            ExitReason.EPT_MISCONFIG: handle_ept_misconfig}
