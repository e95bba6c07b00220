"""`--mode pv`: paravirtualization on top of the VT-x machine, as Hyper-V's enlightenments do.

The VMCS is vtx mode's (trap-and-emulate still catches whatever the guest does natively);
on top of it the partition offers the TLFS hypercall interface (hv/hypercalls): CPUID
advertises "Hv#1", the synthetic MSRs set up the hypercall page, and VMCALL becomes a
hypercall instead of #UD. An enlightened guest (built with `vtemu asm --pv`, i.e. PV=1 for
guests/include/pvops.inc) uses it instead of the sensitive instructions that would trap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtemu.hv.hypercalls import HypercallService
from vtemu.hv.hypercalls.identity import PvCpuidPolicy
from vtemu.hv.vmbus import hypercall as _vmbus_calls  # noqa: F401  (registers 005Ch and 005Dh)
from vtemu.modes import vtx

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu

SOURCE_DEFINES = {"PV": "1"}     # what guest sources are assembled with for this mode


def configure(cpu: "VmxCpu", partition: "Partition") -> None:
    vtx.configure(cpu, partition)
    if getattr(partition, "hypercalls", None) is None:
        service = HypercallService(partition)
        service.install(partition.handlers)
        partition.hypercalls = service  # type: ignore[attr-defined]
        partition.cpuid = PvCpuidPolicy(partition.spec.vcpus, service)
