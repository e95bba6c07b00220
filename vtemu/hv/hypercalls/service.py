"""A partition's hypercall interface: VMCALL exits (18) decoded, checked and dispatched.

The order of checks, each TLFS-sourced:

1. TLFS "Hypercall Restrictions": a hypercall from real mode, virtual-8086 mode or CPL > 0
   is #UD; so is one before the hypercall page is enabled ("Establishing the Hypercall
   Interface"), as on a processor where VMCALL means nothing.
2. The input value ("Hypercall Inputs"): an unknown call code is
   HV_STATUS_INVALID_HYPERCALL_CODE; reserved bits set, a fast bit the call does not take, a
   variable header it does not take, a rep count on a simple call or none (or a start index
   at or past it) on a rep call are HV_STATUS_INVALID_HYPERCALL_INPUT; input or output GPAs
   of a memory call that are not 8-byte aligned are HV_STATUS_INVALID_ALIGNMENT.
3. The call runs; its status and, for a rep call, the reps completed go to RAX (or EDX:EAX)
   in the result value layout ("Hypercall Outputs"), and RIP moves past the VMCALL.

Rep calls ("Hypercall Continuation"): one pass performs at most REPS_PER_PASS elements.
If more remain, the hypervisor writes the advanced rep start index back into the input value
register and leaves RIP at the VMCALL: the guest re-executes it (taking any interrupt that
became pending first) and the next pass goes on from there. The guest sees one call.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Callable

import unicorn.x86_const as U

from vtemu.hv.handlers.common import GP, UD, done, inject_exception, write_eax_edx
from vtemu.hv.hypercalls.abi import (PARAMETER_ALIGNMENT, X64, X86, HvStatus, HypercallError,
                                     HypercallInput, result_value)
from vtemu.hv.hypercalls.page import SYNTHETIC_MSRS, HypercallPage, MsrFault
from vtemu.hv.hypercalls.table import HYPERCALLS, Hypercall, HypercallResult
from vtemu.hv.outcome import RESUME, Outcome
from vtemu.machine.decode import CodeMode
from vtemu.machine.translation import SecondLevelFault
from vtemu.mmu.paging import Access, PageFault
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.handlers import Handler
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit

EPT_WRITE = 1 << 1                    # EPT-violation qualification: a data write (SDM Table 28-7)
PAGE_FAULT, PF_WRITE, PF_USER = 14, 1 << 1, 1 << 2
REPS_PER_PASS = 256        # elements per exit before a rep call continues ("Hypercall Continuation")
CR0_PE = 1
RFLAGS_VM = 1 << 17
_HALF = 0xFFFFFFFF


class HypercallService:
    """The hypercall page, the dispatch table and the counters of one partition."""

    def __init__(self, partition: "Partition") -> None:
        self.partition = partition
        self.table: dict[int, Hypercall] = dict(HYPERCALLS)
        self.page = HypercallPage(partition)
        self.calls: Counter[int] = Counter()          # completed calls by call code
        self.statuses: Counter[HvStatus] = Counter()
        self.continuations = 0
        # HvCallNotifyLongSpinWait: how often each vCPU said it spins, and who wants to know
        # (a scheduler can make the caller yield its turn).
        self.long_spin_waits: Counter[int] = Counter()
        self.spin_wait_listeners: list[Callable[["VmxCpu", int], Outcome | None]] = []

    # --- wiring -------------------------------------------------------------------------------
    def install(self, handlers: dict) -> None:
        """Take VMCALL, and the synthetic MSRs in front of whatever handles the others."""
        handlers[ExitReason.VMCALL] = self.handle_vmcall
        handlers[ExitReason.RDMSR] = self._msr_reader(handlers[ExitReason.RDMSR])
        handlers[ExitReason.WRMSR] = self._msr_writer(handlers[ExitReason.WRMSR])
        handlers[ExitReason.EPT_VIOLATION] = self._ept_guard(handlers[ExitReason.EPT_VIOLATION])
        handlers[ExitReason.EXCEPTION_OR_NMI] = self._shadow_guard(handlers[ExitReason.EXCEPTION_OR_NMI])

    # A guest write to the hypercall page is #GP(0) (page.py). Under EPT it is an EPT
    # violation on the read/execute-only page; under shadow paging a #PF on the read-only
    # leaf whose guest walk allows the write and ends in the page.
    def _ept_guard(self, others: "Handler") -> "Handler":
        def handle_ept_violation(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
            if exit.qualification & EPT_WRITE and self.page.contains(exit.guest_physical or 0):
                return inject_exception(cpu, GP, 0)
            return others(exit, cpu, partition)
        return handle_ept_violation

    def _shadow_guard(self, others: "Handler") -> "Handler":
        def handle_exception(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
            if self.page.gpa is not None and self._writes_overlay(exit, cpu):
                return inject_exception(cpu, GP, 0)
            return others(exit, cpu, partition)
        return handle_exception

    def _writes_overlay(self, exit: "VmExit", cpu: "VmxCpu") -> bool:
        info, error = exit.interruption, exit.interruption_error or 0
        walk = getattr(self.partition.paging, "guest_walk", None)
        if info is None or info.vector != PAGE_FAULT or not error & PF_WRITE or walk is None:
            return False
        try:
            result = walk(cpu, exit.qualification, Access(write=True, user=bool(error & PF_USER)),
                          set_accessed_dirty=False)
        except (PageFault, SecondLevelFault):
            return False
        return self.page.contains(result.gpa)

    def _msr_reader(self, others: "Handler") -> "Handler":
        def handle_rdmsr(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
            msr = cpu.vcpu.read(U.UC_X86_REG_ECX) & _HALF
            if msr not in SYNTHETIC_MSRS:
                return others(exit, cpu, partition)
            write_eax_edx(cpu, self.page.read_msr(cpu, msr))
            return done(exit, cpu)
        return handle_rdmsr

    def _msr_writer(self, others: "Handler") -> "Handler":
        def handle_wrmsr(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
            msr = cpu.vcpu.read(U.UC_X86_REG_ECX) & _HALF
            if msr not in SYNTHETIC_MSRS:
                return others(exit, cpu, partition)
            value = (cpu.vcpu.read(U.UC_X86_REG_EDX) & _HALF) << 32 | cpu.vcpu.read(U.UC_X86_REG_EAX) & _HALF
            try:
                self.page.write_msr(cpu, msr, value)
            except MsrFault:
                return inject_exception(cpu, GP, 0)
            return done(exit, cpu)
        return handle_wrmsr

    # --- VMCALL ---------------------------------------------------------------------------------
    def handle_vmcall(self, exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
        if not self._may_call(cpu):
            return inject_exception(cpu, UD)
        convention = X64 if cpu.vcpu.code_mode() is CodeMode.BITS64 else X86
        call = HypercallInput(_read(cpu, convention.value), _read(cpu, convention.input),
                              _read(cpu, convention.output))
        entry = self.table.get(call.code)
        result = self._perform(cpu, entry, call)
        if entry is not None and entry.rep and result.status == HvStatus.SUCCESS \
                and result.reps_completed < call.rep_count:
            self.continuations += 1
            _write(cpu, convention.value, call.with_rep_start(result.reps_completed))
            return RESUME                  # RIP stays at the VMCALL: the guest re-issues it
        self.calls[call.code] += 1
        self.statuses[result.status] += 1
        _write(cpu, convention.result, result_value(result.status, result.reps_completed))
        cpu.advance_rip(exit)
        return result.outcome if result.outcome is not None else RESUME

    def _may_call(self, cpu: "VmxCpu") -> bool:
        vcpu = cpu.vcpu
        if not vcpu.read(U.UC_X86_REG_CR0) & CR0_PE or vcpu.read(U.UC_X86_REG_RFLAGS) & RFLAGS_VM:
            return False
        return vcpu.state().cpl == 0 and self.page.enabled

    def _perform(self, cpu: "VmxCpu", entry: Hypercall | None, call: HypercallInput) -> HypercallResult:
        try:
            status = _input_status(entry, call)
            if status is not HvStatus.SUCCESS:
                return HypercallResult(status, call.rep_start if entry and entry.rep else 0)
            assert entry is not None
            if entry.rep:
                call = HypercallInput(call.value, call.input, call.output,
                                      rep_end=min(call.rep_count, call.rep_start + REPS_PER_PASS))
            result = entry.handler(self.partition, cpu, call)
            if entry.rep and result.status == HvStatus.SUCCESS and result.reps_completed <= call.rep_start:
                raise RuntimeError(f"{entry.name} made no progress")
            return result
        except HypercallError as error:
            reps = error.reps_completed if error.reps_completed is not None else call.rep_start
            return HypercallResult(error.status, reps if entry is not None and entry.rep else 0)

    # --- services hypercalls use ----------------------------------------------------------------
    def note_long_spin_wait(self, cpu: "VmxCpu", spins: int) -> Outcome | None:
        self.long_spin_waits[cpu.index] += 1
        outcome = None
        for listener in self.spin_wait_listeners:
            outcome = listener(cpu, spins) or outcome
        return outcome


def _input_status(entry: Hypercall | None, call: HypercallInput) -> HvStatus:
    """Step 2 of the module docstring: what the input value and GPAs allow."""
    if entry is None:
        return HvStatus.INVALID_HYPERCALL_CODE
    if call.reserved_bits or (call.fast and not entry.fast) or (not call.fast and not entry.memory):
        return HvStatus.INVALID_HYPERCALL_INPUT
    if call.variable_header_qwords and not entry.variable_header:
        return HvStatus.INVALID_HYPERCALL_INPUT
    if entry.rep and not call.rep_start < call.rep_count:
        return HvStatus.INVALID_HYPERCALL_INPUT
    if not entry.rep and (call.rep_count or call.rep_start):
        return HvStatus.INVALID_HYPERCALL_INPUT
    if not call.fast and (call.input % PARAMETER_ALIGNMENT or call.output % PARAMETER_ALIGNMENT):
        return HvStatus.INVALID_ALIGNMENT
    return HvStatus.SUCCESS


def _read(cpu: "VmxCpu", registers: tuple[int, ...]) -> int:
    if len(registers) == 1:
        return cpu.vcpu.read(registers[0])
    high, low = registers
    return (cpu.vcpu.read(high) & _HALF) << 32 | cpu.vcpu.read(low) & _HALF


def _write(cpu: "VmxCpu", registers: tuple[int, ...], value: int) -> None:
    if len(registers) == 1:
        cpu.vcpu.write(registers[0], value)
        return
    high, low = registers
    cpu.vcpu.write(high, value >> 32 & _HALF)
    cpu.vcpu.write(low, value & _HALF)

