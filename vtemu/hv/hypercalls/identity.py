"""CPUID in pv mode: the vtx leaves plus the Hyper-V TLFS hypercall interface (TLFS "Hypervisor
CPUID Leaves").

Only these differ from vtx mode (where 40000001h is all zero, so no guest looks further):

  40000001h  EAX "Hv#1": the leaves 40000003h-40000006h follow the TLFS
  40000003h  EAX/EBX the partition privilege mask (TLFS "Partition Privilege Flags"):
             AccessHypercallMsrs and AccessVpIndex for the MSRs of page.py; PostMessages
             and SignalEvents when those calls (005Ch, 005Dh) are in the partition's table
  40000004h  EAX the recommendations: use hypercalls for address-space switches and local
             and remote TLB flushes; EBX the spinlock retry count: a guest should call
             HvCallNotifyLongSpinWait after SPINLOCK_RETRIES failed attempts
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtemu.hv.cpuid_policy import HYPERVISOR_BASE, CpuidPolicy

if TYPE_CHECKING:
    from vtemu.hv.hypercalls.service import HypercallService

INTERFACE_HV1 = int.from_bytes(b"Hv#1", "little")      # 31237648h
# HV_PARTITION_PRIVILEGE_MASK, low half (EAX) and high half (EBX).
ACCESS_HYPERCALL_MSRS = 1 << 5
ACCESS_VP_INDEX = 1 << 6
POST_MESSAGES = 1 << 4
SIGNAL_EVENTS = 1 << 5
HV_CALL_POST_MESSAGE, HV_CALL_SIGNAL_EVENT = 0x005C, 0x005D
# Recommendations (40000004h EAX).
USE_HYPERCALL_FOR_ADDRESS_SPACE_SWITCH = 1 << 0
USE_HYPERCALL_FOR_LOCAL_FLUSH = 1 << 1
USE_HYPERCALL_FOR_REMOTE_FLUSH = 1 << 2
# Hyper-V recommends 0xFFF attempts: microseconds of spinning against scheduler quanta of
# milliseconds. vtemu's quanta are --slice guest instructions (20000 by default) and one
# attempt of a PAUSE loop is about 6 instructions, so 0xFFF attempts would outlast a whole
# turn and the notification would come too late to matter; 0x100 attempts (~1500
# instructions) keeps spinning a small fraction of a turn, as on the real system.
# 0xFFFFFFFF would mean "never notify" (what vtx mode reports).
SPINLOCK_RETRIES = 0x100


class PvCpuidPolicy(CpuidPolicy):
    def __init__(self, vcpus: int, service: "HypercallService") -> None:
        super().__init__(vcpus)
        self._service = service

    def _hypervisor(self, leaf: int) -> tuple[int, int, int, int]:
        if leaf == HYPERVISOR_BASE + 1:
            return (INTERFACE_HV1, 0, 0, 0)
        if leaf == HYPERVISOR_BASE + 3:
            return (ACCESS_HYPERCALL_MSRS | ACCESS_VP_INDEX, self._message_privileges(), 0, 0)
        if leaf == HYPERVISOR_BASE + 4:
            recommended = (USE_HYPERCALL_FOR_ADDRESS_SPACE_SWITCH | USE_HYPERCALL_FOR_LOCAL_FLUSH
                           | USE_HYPERCALL_FOR_REMOTE_FLUSH)
            return (recommended, SPINLOCK_RETRIES, 0, 0)
        return super()._hypervisor(leaf)

    def _message_privileges(self) -> int:
        table = self._service.table
        return ((POST_MESSAGES if HV_CALL_POST_MESSAGE in table else 0)
                | (SIGNAL_EVENTS if HV_CALL_SIGNAL_EVENT in table else 0))
