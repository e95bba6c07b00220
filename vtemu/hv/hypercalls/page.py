"""The synthetic MSRs that set up the hypercall interface, and the hypercall page overlay.

TLFS "Establishing the Hypercall Interface" and "Partition Privilege Flags":

* HV_X64_MSR_GUEST_OS_ID (40000000h): the guest identifies itself. While it is zero the
  hypercall page cannot be enabled (a write with the enable bit keeps the GPA but reads back
  with enable clear); writing zero disables an enabled page.
* HV_X64_MSR_HYPERCALL (40000001h): bit 0 enable, bit 1 locked, bits 11:2 reserved (a
  write with any of them set is #GP), bits 63:12 the GPA page number. Enabling overlays the
  hypercall page at that GPA: the guest reads and executes it, and a guest write to it is
  #GP(0) (the overlay is read/execute-only; vtemu raises #GP rather than dropping the write,
  as the issue asks). The RAM beneath is kept and comes back when the overlay goes. Once
  locked, the MSR ignores writes until reset. vtemu places the overlay only over RAM: a GPA
  outside it is #GP(0).
* HV_X64_MSR_VP_INDEX (40000002h, read-only): the vCPU's index.

The page holds real code: `vmcall; ret` at offset 0 (the guest CALLs it, in 32- or 64-bit
code), the rest INT3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtemu.machine.addr import PAGE_MASK

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu

HV_X64_MSR_GUEST_OS_ID = 0x40000000
HV_X64_MSR_HYPERCALL = 0x40000001
HV_X64_MSR_VP_INDEX = 0x40000002
SYNTHETIC_MSRS = (HV_X64_MSR_GUEST_OS_ID, HV_X64_MSR_HYPERCALL, HV_X64_MSR_VP_INDEX)

HYPERCALL_ENABLE = 1 << 0
HYPERCALL_LOCKED = 1 << 1
HYPERCALL_RESERVED = 0xFFC          # bits 11:2
PAGE_SIZE = 4096
VMCALL_RET = bytes((0x0F, 0x01, 0xC1, 0xC3))     # vmcall; ret (SDM Vol. 2 VMCALL: 0F 01 C1)
INT3 = 0xCC
HYPERCALL_PAGE_CODE = VMCALL_RET + bytes((INT3,)) * (PAGE_SIZE - len(VMCALL_RET))


class MsrFault(Exception):
    """The guest's RDMSR/WRMSR of a synthetic MSR is #GP(0)."""


class HypercallPage:
    """The partition's hypercall interface state: the two MSRs and the overlay they create."""

    def __init__(self, partition: "Partition") -> None:
        self.partition = partition
        self.guest_os_id = 0
        self.msr_value = 0             # HV_X64_MSR_HYPERCALL as the guest reads it
        self._overlay: tuple[int, bytes] | None = None    # (GPA page, RAM beneath)

    @property
    def enabled(self) -> bool:
        return bool(self.msr_value & HYPERCALL_ENABLE)

    @property
    def gpa(self) -> int | None:
        return None if self._overlay is None else self._overlay[0]

    def contains(self, gpa: int) -> bool:
        return self._overlay is not None and gpa & PAGE_MASK == self._overlay[0]

    # --- the MSRs -------------------------------------------------------------------------------
    def read_msr(self, cpu: "VmxCpu", msr: int) -> int:
        if msr == HV_X64_MSR_GUEST_OS_ID:
            return self.guest_os_id
        if msr == HV_X64_MSR_HYPERCALL:
            return self.msr_value
        return cpu.index

    def write_msr(self, cpu: "VmxCpu", msr: int, value: int) -> None:
        if msr == HV_X64_MSR_GUEST_OS_ID:
            self.guest_os_id = value
            if value == 0 and self.enabled:
                self._set(cpu, self.msr_value & ~HYPERCALL_ENABLE)
        elif msr == HV_X64_MSR_HYPERCALL:
            self._write_hypercall_msr(cpu, value)
        else:
            raise MsrFault("HV_X64_MSR_VP_INDEX is read-only")

    def _write_hypercall_msr(self, cpu: "VmxCpu", value: int) -> None:
        if value & HYPERCALL_RESERVED:
            raise MsrFault(f"reserved bits in HV_X64_MSR_HYPERCALL value {value:#x}")
        if self.msr_value & HYPERCALL_LOCKED:
            return
        if value & HYPERCALL_ENABLE:
            if self.partition.memory.hpa_to_gpa(self.partition.memory.gpa_to_hpa(value & PAGE_MASK, PAGE_SIZE)
                                                or -1) != value & PAGE_MASK:
                raise MsrFault(f"hypercall page GPA {value & PAGE_MASK:#x} is not RAM")
            if self.guest_os_id == 0:
                value &= ~HYPERCALL_ENABLE
        self._set(cpu, value)

    def _set(self, cpu: "VmxCpu", value: int) -> None:
        target = value & PAGE_MASK if value & HYPERCALL_ENABLE else None
        if self.gpa != target:
            self._remove(cpu)
            if target is not None:
                self._place(cpu, target)
            self.partition.paging.guest_physical_map_changed()  # type: ignore[attr-defined]
        self.msr_value = value

    # --- the overlay ----------------------------------------------------------------------------
    def _place(self, cpu: "VmxCpu", gpa: int) -> None:
        memory = self.partition.memory
        hpa = memory.gpa_to_hpa(gpa, PAGE_SIZE)
        assert hpa is not None
        self._overlay = (gpa, self.partition.host.read(hpa, PAGE_SIZE))  # type: ignore[arg-type]
        self._write_page(cpu, hpa, HYPERCALL_PAGE_CODE)
        memory.set_overlay(gpa, True)

    def _remove(self, cpu: "VmxCpu") -> None:
        if self._overlay is None:
            return
        gpa, beneath = self._overlay
        self._overlay = None
        memory = self.partition.memory
        memory.set_overlay(gpa, False)
        hpa = memory.gpa_to_hpa(gpa, PAGE_SIZE)
        assert hpa is not None
        self._write_page(cpu, hpa, beneath)

    def _write_page(self, cpu: "VmxCpu", hpa: int, data: bytes) -> None:
        """Through the writing vCPU (its translated code and the shadow MMU hear of it); the
        other vCPUs drop their translations, which may hold the page's old code."""
        cpu.vcpu.write_host(hpa, data)
        for other in self.partition.vcpus:
            if other is not cpu:
                other.vcpu.flush_translations()
