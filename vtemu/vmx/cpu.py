"""A processor in VMX non-root operation: the vCPU plus the VT-x logic that decides exits.

Every event the vCPU reports passes through here. Each becomes either a VM exit (recorded
in the VMCS and handed to the hypervisor through `exit_handler`) or native behaviour.
Exits raised from inside Unicorn's hooks are handled there and then ("inline"): when the
hypervisor only read and wrote registers, the guest continues without leaving Unicorn,
which is what makes an I/O exit cost microseconds. Anything that needs the CPU quiescent
(event injection, descriptor-cache loads, undoing an instruction Unicorn completes) makes
the vCPU stop; `run_slice` then finishes the work before the next instruction runs.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Protocol

import capstone.x86_const as C
import unicorn.x86_const as U

from vtemu.machine.cpustate import HF_CS32, HF_CS64, HF_INHIBIT_IRQ, HF_PE, Seg
from vtemu.machine.decode import CodeMode, Instruction
from vtemu.machine.delivery import Event, EventType
from vtemu.machine.memory import HostMemory
from vtemu.machine.msrs import IA32_TSC_AUX, MsrModel, TimeStampCounter
from vtemu.machine.sites import Site, classify
from vtemu.machine.translation import (GuestPageFault, NonCanonicalAddress, SecondLevelFault,
                                      TranslationFault, Translator)
from vtemu.machine.vcpu import GuestException, Stop, StopKind, VCpu
from vtemu.vmx import instructions
from vtemu.vmx.instructions import VMX_INSTRUCTION_EXITS
from vtemu.vmx.controls import ExitControls, PinBasedControls, PrimaryProcessorControls as P
from vtemu.vmx.controls import SecondaryProcessorControls as S
from vtemu.vmx.controls import VmxCapabilities
from vtemu.vmx.exit import Activity, ExitDecision, VmExit
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.guest_state import LiveGuestState
from vtemu.vmx.intercept import Intercepts
from vtemu.vmx.interruption import InterruptionInfo, InterruptionType
from vtemu.vmx.qualifications import IoDirection
from vtemu.vmx.reasons import ExitReason
from vtemu.vmx.transitions import deliver_event, vm_entry, vm_exit
from vtemu.vmx.vmcs import Vmcs

RFLAGS_IF = 1 << 9
RFLAGS_IOPL_SHIFT = 12
RFLAGS_VM = 1 << 17
GP = 13
PAGE_FAULT = 14
TSS_AVAILABLE, TSS_BUSY = 0x9, 0xB
TSS_IOMAP_BASE = 0x66  # offset of the I/O map base address in a 32/64-bit TSS (SDM Fig. 7-2)
EXIT_HISTORY = 16

_ADDRESS_MASK = 0xFFFFFFFFFFFFFFFF
_MODES = {0: CodeMode.BITS16, HF_CS32: CodeMode.BITS32, HF_CS32 | HF_CS64: CodeMode.BITS64,
          HF_CS64: CodeMode.BITS64}



class ModeEngine(Protocol):
    """A CPU-virtualization technique that runs guest code its own way (binary translation):
    it prepares each slice and turns what stopped it back into the guest's precise state."""

    def before_run(self) -> bool: ...
    def after_run(self, stop: Stop) -> Stop: ...
    def takes_exits(self) -> bool: ...


class PortSpace(Protocol):
    def read(self, port: int, size: int) -> int: ...
    def write(self, port: int, size: int, value: int) -> None: ...
    def read_string(self, port: int, size: int, count: int) -> bytes: ...
    def write_string(self, port: int, size: int, data: bytes) -> None: ...


class InterruptPin(Protocol):
    def intr_asserted(self) -> bool: ...
    def acknowledge(self) -> int: ...


class ProcessorSignals(Protocol):
    """INIT, SIPI and NMI as a local APIC latches them for its processor (SDM 10.6.1)."""

    init_pending: bool
    sipi_vector: int | None
    nmi_pending: bool

    def take_init(self) -> bool: ...
    def take_sipi(self) -> int | None: ...
    def take_nmi(self) -> bool: ...


def _no_string_io(insn: Instruction, port: int, size: int, direction: IoDirection) -> None:
    raise RuntimeError("string I/O passed through with no hypervisor to perform it")


def _no_hypervisor(exit: VmExit) -> ExitDecision:
    raise RuntimeError(f"VM exit {exit.describe()} with no hypervisor attached")


class VmxCpu:
    def __init__(self, vcpu: VCpu, host: HostMemory, ports: PortSpace,
                 interrupts: InterruptPin | None = None,
                 caps: VmxCapabilities | None = None) -> None:
        self.vcpu = vcpu
        self.host = host
        self.ports = ports
        self.interrupts = interrupts
        self.caps = caps or VmxCapabilities()
        self.activity = Activity.ACTIVE
        self.vmcs = Vmcs(LiveGuestState(vcpu, lambda: int(self.activity), self._set_activity),
                         capabilities=self.caps)
        self.tsc = TimeStampCounter(vcpu.clock.now_ns)
        self.msrs = MsrModel(vcpu, self.tsc, bsp=vcpu.index == 0)
        self.exit_handler: Callable[[VmExit], ExitDecision] = _no_hypervisor
        self.history: deque[VmExit] = deque(maxlen=EXIT_HISTORY)
        self.exits_taken = 0
        self.blocked = False
        self.stopped = False
        self.intercepts = Intercepts.from_vmcs(self.vmcs, self._host_page)
        self._entry_pending = True
        self._pending_event: tuple[Event, int, int] | None = None   # event, return RIP, length
        self._after_stop: Callable[[], None] | None = None
        self.string_io_passthrough: Callable[[Instruction, int, int, IoDirection], None] = _no_string_io
        self._rewind: dict[int, int] | None = None
        self._inline = False
        self._advanced = False
        self._preemption_deadline: int | None = None
        self.pause_loop = instructions.PauseLoop()
        self._paging: tuple[Translator, Translator] | None = None
        self.mtf_pending = False
        self.mode_engine: ModeEngine | None = None
        self.exceptions_delivered = 0   # hardware exceptions that reached the guest's IDT/IVT
        self.signals: ProcessorSignals | None = None
        vcpu.events = self

    # --- state the hypervisor and handlers use --------------------------------------------
    @property
    def index(self) -> int:
        return self.vcpu.index

    def _host_page(self, hpa: int) -> memoryview:
        region = self.host.region(hpa, 4096)
        offset = hpa - region.hpa
        return memoryview(region.buffer)[offset:offset + 4096]

    def _set_activity(self, value: int) -> None:
        self.activity = Activity(value)

    def reload_controls(self) -> None:
        """VM entry latches the execution controls (and which instructions to watch)."""
        self.intercepts = Intercepts.from_vmcs(self.vmcs, self._host_page)
        self.vcpu.set_site_kinds(self.intercepts.site_kinds())
        self._select_paging()

    def attach_paging(self, ept: Translator, direct: Translator) -> None:
        """The two ways this processor translates: through EPT, or (EPT off) the tables CR3
        roots in host-physical memory (SDM 25.6.2); the "enable EPT" control latched at VM
        entry picks one."""
        self._paging = (ept, direct)

    def _select_paging(self) -> None:
        if self._paging is None:
            return
        ept, direct = self._paging
        unit = ept if S.ENABLE_EPT in self.intercepts.secondary else direct
        if unit is not self.vcpu.translator:
            self.vcpu.translator = unit
            self.vcpu.flush_tlb()

    def guest_tsc(self) -> int:
        """What RDTSC returns in the guest: the TSC plus the VMCS TSC offset (SDM 25.3)."""
        return (self.tsc.read() + self.intercepts.tsc_offset) & 0xFFFFFFFFFFFFFFFF

    def advance_rip(self, exit: VmExit) -> None:
        """Complete the exiting instruction: the one helper that moves RIP past it. Fault-like
        exits leave RIP at the instruction; HLT is the one trap-like case, because Unicorn
        executes HLT before vtemu sees it (completes_natively)."""
        self._advanced = True
        if exit.completes_natively:
            return
        self.vcpu.rip = exit.guest_rip + exit.instruction_length
        self.vcpu.retire_emulated()

    def inject(self, info: InterruptionInfo, error_code: int | None = None,
               instruction_length: int = 0) -> None:
        """Program event injection for the next VM entry (SDM 24.8.3)."""
        self.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, info.encode())
        if error_code is not None:
            self.vmcs.write(F.VM_ENTRY_EXCEPTION_ERROR_CODE, error_code)
        if instruction_length:
            self.vmcs.write(F.VM_ENTRY_INSTRUCTION_LEN, instruction_length)

    def complete(self, insn: Instruction) -> None:
        """An instruction this processor emulated with native semantics has retired."""
        self.vcpu.rip = insn.next_address
        self.vcpu.retire_emulated()

    def perform_after_stop(self, action: Callable[[], None]) -> None:
        """Native work that edits descriptor caches cannot run inside Unicorn: stop first."""
        self._after_stop = action
        self.vcpu.request_stop()

    def interruptible(self) -> bool:
        """RFLAGS.IF = 1 and no blocking by STI or MOV SS (SDM 6.8.3, 24.4.2)."""
        if not self.vcpu.read(U.UC_X86_REG_RFLAGS) & RFLAGS_IF:
            return False
        return not self.vcpu.state().hflags & HF_INHIBIT_IRQ

    def activity_on_injection(self) -> None:
        """An injected event takes the guest out of HLT (SDM 26.6.2)."""
        if self.activity is Activity.HLT:
            self.activity = Activity.ACTIVE

    # --- exits ----------------------------------------------------------------------------
    def _make_exit(self, reason: ExitReason, rip: int, **fields: object) -> VmExit:
        exit = VmExit(reason, rip, sequence=self.exits_taken, vcpu=self.index,
                      instructions=self.vcpu.retired_so_far, **fields)  # type: ignore[arg-type]
        self.history.append(exit)
        return exit

    def exit_instruction(self, reason: ExitReason, insn: Instruction, qualification: int = 0,
                         info: int = 0, linear: int | None = None, detail: str | None = None) -> None:
        """A fault-like instruction exit from a code hook: RIP at the instruction (SDM 27.1)."""
        exit = self._make_exit(reason, insn.address, qualification=qualification,
                               instruction_length=insn.size, instruction_info=info,
                               guest_linear=linear, detail=detail, instruction=insn)
        self._take(exit)

    def _take(self, exit: VmExit) -> None:
        self._advanced = False
        self.pause_loop.forget()
        if self.mode_engine is not None and self.mode_engine.takes_exits():
            # Binary translation: the hypervisor's routine runs as a callout from translated
            # code, with no VMX transition and nothing recorded in the VMCS.
            decision = self.exit_handler(exit._replace(callout=True))
        else:
            decision = vm_exit(self, exit)
        self._after_exit(exit, decision)

    def _after_exit(self, exit: VmExit, decision: ExitDecision) -> None:
        if decision is ExitDecision.RESUME:
            self._entry_pending = True
            if self._inline and self._trivial_entry():
                self._entry_pending = False
                return
        elif decision is ExitDecision.HALT:
            self.blocked = True
        else:
            self.stopped = True
        if self._inline:
            self.vcpu.request_stop()

    def _trivial_entry(self) -> bool:
        """Nothing for VM entry to check, inject or report: the guest may simply continue.
        (Only a VMWRITE, which makes the VMCS dirty, can make an injection valid: the exit
        itself cleared the valid bit.)"""
        if self.vmcs.is_dirty() or self._rewind is not None or self._pending_event is not None:
            return False
        if self.intercepts.window_exiting:
            return False
        return not (self.interrupts is not None and self.interrupts.intr_asserted())

    def raise_exception(self, vector: int, error_code: int | None = None,
                        cr2: int | None = None, rip: int | None = None) -> None:
        """A hardware exception detected by the processor: exit if the bitmap says so, else deliver."""
        rip = self.vcpu.rip if rip is None else rip
        if self.intercepts.exception_exits(vector, error_code):
            self._take(self.exception_exit(vector, error_code, cr2, rip))
            return
        if vector == PAGE_FAULT and cr2 is not None:
            self.vcpu.write(U.UC_X86_REG_CR2, cr2)
        self._pending_event = (Event.exception(vector, error_code), rip, 0)
        if self._inline:
            self.vcpu.request_stop()

    def exception_exit(self, vector: int, error_code: int | None, cr2: int | None, rip: int) -> VmExit:
        """Exit 0 for a hardware exception; a #PF's linear address is the qualification (27.2.1)."""
        return self._make_exit(
            ExitReason.EXCEPTION_OR_NMI, rip, qualification=(cr2 or 0) if vector == PAGE_FAULT else 0,
            interruption=InterruptionInfo.exception(vector, error_code=error_code is not None),
            interruption_error=error_code, detail=f"vector {vector}")

    def translation_exit(self, fault: TranslationFault, fault_address: int | None) -> VmExit:
        """EPT violation (48) or misconfiguration (49) for a refused guest-physical access."""
        assert isinstance(fault, SecondLevelFault), fault
        rip = self.vcpu.rip
        if fault.misconfiguration:
            return self._make_exit(ExitReason.EPT_MISCONFIG, rip, guest_physical=fault.gpa,
                                   detail=f"gpa {fault.gpa:#x}")
        gpa = fault.gpa
        final_access = fault.qualification & (1 << 8)
        if final_access and fault_address is not None:
            gpa = (gpa & ~0xFFF) | (fault_address & 0xFFF)
        linear = fault_address if fault_address is not None else fault.linear
        return self._make_exit(ExitReason.EPT_VIOLATION, rip, qualification=fault.qualification,
                               guest_physical=gpa,
                               guest_linear=linear if fault.qualification & (1 << 7) else None,
                               detail=f"gpa {gpa:#x}")

    # --- the vCPU's events (machine.vcpu.CpuEvents) ---------------------------------------
    # IN, OUT, CPUID, RDTSC and RDTSCP are sites like RDMSR: the processor decides there,
    # before the instruction runs, and completes it itself, so a stop is exact. Unicorn's
    # own hooks for them only fire if an instruction escaped the site scan: a vtemu bug.
    def _unsited(self, what: str) -> None:
        raise RuntimeError(f"{what} at {self.vcpu.rip:#x} ran without passing its site (vtemu bug)")

    def port_in(self, port: int, size: int) -> int:
        self._unsited("IN")
        return 0

    def port_out(self, port: int, size: int, value: int) -> None:
        self._unsited("OUT")

    def cpuid(self) -> None:
        self._unsited("CPUID")

    def rdtsc(self, with_aux: bool) -> None:
        self._unsited("RDTSCP" if with_aux else "RDTSC")

    def io_denied(self, port: int, size: int) -> bool:
        """I/O permission (SDM Vol. 1 18.5): in protected mode with CPL > IOPL (or in virtual-8086
        mode) every byte of the port range needs a clear bit in the TSS I/O bitmap. The check
        comes before any VM exit (SDM 25.1.1). Unicorn's core performs no such check."""
        state = self.vcpu.state()
        if not state.hflags & HF_PE or state.cpl == 0:
            return False  # real mode, or CPL 0 <= any IOPL
        rflags = self.vcpu.read(U.UC_X86_REG_RFLAGS)
        if state.cpl <= (rflags >> RFLAGS_IOPL_SHIFT) & 3 and not rflags & RFLAGS_VM:
            return False
        return not self._tss_permits(port, size)

    def _tss_permits(self, port: int, size: int) -> bool:
        tr = self.vcpu.state().table("tr")
        if (tr.flags >> 8) & 0xF not in (TSS_AVAILABLE, TSS_BUSY) or tr.limit < TSS_IOMAP_BASE + 1:
            return False  # a 16-bit TSS has no I/O bitmap
        try:
            bitmap = int.from_bytes(self.vcpu.read_linear(tr.base + TSS_IOMAP_BASE, 2), "little")
            byte = bitmap + port // 8
            if byte + 1 > tr.limit:
                return False
            bits = int.from_bytes(self.vcpu.read_linear(tr.base + byte, 2), "little")
        except TranslationFault:
            return False
        return not bits & (((1 << size) - 1) << (port % 8))

    def sensitive_instruction(self, site: Site) -> None:
        state = self.vcpu.state()
        insn = self.vcpu.decoder.decode(site.raw, (site.address - state.cs_base) & _ADDRESS_MASK,
                                        _MODES[state.hflags & (HF_CS32 | HF_CS64)])
        if insn is None:
            return
        kind = classify(insn)
        if kind is None or kind not in self.vcpu.sites.kinds:
            return  # this address holds other code now (another mapping or mode)
        try:
            instructions.handle(self, kind, insn)
        except GuestException as fault:
            self.raise_exception(fault.vector, fault.error_code, rip=insn.address)


    # --- the run loop's interface ---------------------------------------------------------
    def run_slice(self, budget: int | None) -> bool:
        """Finish pending entry work, run the guest until it stops, handle why. False if the
        vCPU could not run (halted, blocked in the hypervisor, or stopped)."""
        if not self._prepare():
            return False
        budget = self._slice_budget(budget)
        engine = self.mode_engine
        if engine is not None and not engine.before_run():
            return True                 # the engine raised an event instead: deliver it first
        self._inline = True
        try:
            stop = self.vcpu.run(budget)
        finally:
            self._inline = False
        if engine is not None:
            stop = engine.after_run(stop)
        if stop.retired and P.MONITOR_TRAP_FLAG in self.intercepts.primary:
            self.mtf_pending = True     # the instruction completed: MTF exit next (SDM 25.5.2)
        self._handle_stop(stop)
        return True

    def settle(self) -> bool:
        """Do what is owed before the next guest instruction (VM entry, injection, event
        delivery, asynchronous exits) without running one: the state a debugger shows. False
        if the vCPU cannot run now (halted, blocked or stopped)."""
        return self._prepare()

    def can_wake(self) -> bool:
        """Would a halted or blocked vCPU have something to do now?"""
        if self.stopped:
            return False
        if self.signals is not None and self._signal_waiting():
            return True
        if self.activity is Activity.WAIT_FOR_SIPI:
            return False            # only INIT and SIPI wake a processor waiting for SIPI
        if self._pending_event is not None or self.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) >> 31:
            return True
        if self.interrupts is None or not self.interrupts.intr_asserted():
            return False
        exiting = PinBasedControls.EXTERNAL_INTERRUPT_EXITING in self.intercepts.pin
        if self.blocked:
            return bool(self.vcpu.read(U.UC_X86_REG_RFLAGS) & RFLAGS_IF)
        return exiting or self.interruptible()

    def _slice_budget(self, budget: int | None) -> int | None:
        primary = self.intercepts.primary
        if (P.INTERRUPT_WINDOW_EXITING in primary or P.NMI_WINDOW_EXITING in primary
                or P.MONITOR_TRAP_FLAG in primary or self._intr_waits_for_window()):
            return 1  # one instruction: until the window opens, or the MTF exit
        deadline = self._preemption_deadline
        if deadline is not None:
            remaining = max(1, deadline - self.vcpu.clock.now_ns())
            budget = remaining if budget is None else min(budget, remaining)
        return budget

    def _intr_waits_for_window(self) -> bool:
        """INTR is asserted for direct delivery (no external-interrupt exiting) but IF or an
        interrupt shadow blocks it: the guest must be stepped so STI, POPF or IRET lets it in
        at the instruction boundary where the processor would take it (SDM 6.8.3)."""
        return (self.interrupts is not None
                and PinBasedControls.EXTERNAL_INTERRUPT_EXITING not in self.intercepts.pin
                and self.interrupts.intr_asserted() and not self.interruptible())

    def _prepare(self) -> bool:
        """Everything owed before the next guest instruction, in the processor's order."""
        while True:
            if self.stopped:
                return False
            if self._rewind is not None:
                self._apply_rewind()
            if self.blocked:
                if not self.can_wake():
                    return False
                self.blocked = False
            if self._entry_pending:
                self._entry_pending = False
                exit = vm_entry(self)
                self._arm_preemption_timer()
                if exit is not None:
                    self._take(exit)
                    continue
            if self._pending_event is not None:
                event, rip, length = self._pending_event
                self._pending_event = None
                self.activity_on_injection()
                self.vcpu.rip = rip - length
                exit = deliver_event(self, event, rip)
                if exit is not None:
                    # A software event whose delivery exits is reported at its instruction,
                    # with the length a re-injection needs (SDM 27.2.4, 27.2.5).
                    self._take(exit._replace(instruction_length=length) if length else exit)
                continue
            if self._after_stop is not None:
                action, self._after_stop = self._after_stop, None
                try:
                    action()
                except GuestException as fault:
                    self.raise_exception(fault.vector, fault.error_code)
                continue
            exit = self._asynchronous_exit()
            if exit is not None:
                self._take(exit)
                continue
            if self._deliver_external_interrupt():
                continue
            return self.activity is Activity.ACTIVE

    def _apply_rewind(self) -> None:
        """Undo Unicorn's completion of an instruction whose exit the hypervisor left pending."""
        registers, self._rewind = self._rewind, None
        assert registers is not None
        for register, value in registers.items():
            self.vcpu.write(register, value)
        self.vcpu.retire_emulated(-1)

    def _asynchronous_exit(self) -> VmExit | None:
        """Exits that happen between instructions, in the priority order of SDM 25.2 and
        25.5.2: a pending MTF exit, the preemption timer, NMI-window exiting, interrupt-window
        exiting, external interrupts."""
        rip = self.vcpu.rip
        if self.signals is not None:
            exit = self._signal_exit(rip)
            if exit is not None or self.activity is Activity.WAIT_FOR_SIPI:
                return exit
        if self.mtf_pending:        # after a stepped instruction, or injected (type 7, 26.5.2)
            self.mtf_pending = False
            return self._make_exit(ExitReason.MONITOR_TRAP_FLAG, rip)
        deadline = self._preemption_deadline
        if deadline is not None and self.vcpu.clock.now_ns() >= deadline:
            self._preemption_deadline = None
            return self._make_exit(ExitReason.PREEMPTION_TIMER, rip)
        if self._nmi_window_open():
            self.activity_on_injection()
            return self._make_exit(ExitReason.NMI_WINDOW, rip)
        if P.INTERRUPT_WINDOW_EXITING in self.intercepts.primary and self.interruptible():
            self.activity_on_injection()
            return self._make_exit(ExitReason.INTERRUPT_WINDOW, rip)
        if (PinBasedControls.EXTERNAL_INTERRUPT_EXITING in self.intercepts.pin
                and self.interrupts is not None and self.interrupts.intr_asserted()):
            self.activity_on_injection()
            return self._external_interrupt_exit(rip)
        return None

    def _signal_waiting(self) -> bool:
        signals = self.signals
        assert signals is not None
        if signals.init_pending:
            return True
        if self.activity is Activity.WAIT_FOR_SIPI:
            return signals.sipi_vector is not None
        return signals.nmi_pending

    def _signal_exit(self, rip: int) -> VmExit | None:
        """INIT signals always exit; a SIPI exits only in the wait-for-SIPI state, with its
        vector as the qualification, and is otherwise discarded (SDM 25.2, 27.2.1). An NMI
        exits with NMI exiting (25.2), as exit 0 with interruption type NMI (27.2.2)."""
        signals = self.signals
        assert signals is not None
        if signals.take_init():
            self.activity_on_injection()
            return self._make_exit(ExitReason.INIT_SIGNAL, rip)
        vector = signals.take_sipi()
        if vector is not None and self.activity is Activity.WAIT_FOR_SIPI:
            return self._make_exit(ExitReason.SIPI, rip, qualification=vector,
                                   detail=f"vector {vector:#x}")
        if (self.activity is not Activity.WAIT_FOR_SIPI and signals.nmi_pending
                and PinBasedControls.NMI_EXITING in self.intercepts.pin):
            signals.take_nmi()
            self.activity_on_injection()
            return self._make_exit(ExitReason.EXCEPTION_OR_NMI, rip, interruption=InterruptionInfo.nmi(),
                                   detail="NMI")
        return None

    def _nmi_window_open(self) -> bool:
        """NMI-window exiting: no virtual-NMI blocking and no blocking by MOV SS (SDM 25.2;
        vtemu also waits out blocking by STI, which the SDM allows, as QEMU keeps one flag)."""
        if P.NMI_WINDOW_EXITING not in self.intercepts.primary:
            return False
        state = self.vcpu.state()
        return not state.nmi_blocked and not state.interrupt_shadow

    def _external_interrupt_exit(self, rip: int) -> VmExit:
        assert self.interrupts is not None
        if ExitControls.ACKNOWLEDGE_INTERRUPT_ON_EXIT in self.intercepts.exit_controls:
            vector = self.interrupts.acknowledge()
            return self._make_exit(ExitReason.EXTERNAL_INTERRUPT, rip,
                                   interruption=InterruptionInfo.external_interrupt(vector),
                                   detail=f"vector {vector:#x}")
        return self._make_exit(ExitReason.EXTERNAL_INTERRUPT, rip)

    def _deliver_external_interrupt(self) -> bool:
        """Without external-interrupt exiting, INTR reaches the guest IDT directly (SDM 25.2)."""
        if self.interrupts is None or PinBasedControls.EXTERNAL_INTERRUPT_EXITING in self.intercepts.pin:
            return False
        if not self.interrupts.intr_asserted() or not self.interruptible():
            return False
        vector = self.interrupts.acknowledge()
        self._pending_event = (Event(vector, EventType.EXTERNAL_INTERRUPT), self.vcpu.rip, 0)
        return True

    def preemption_timer_left(self) -> int:
        """Timer ticks until expiry, rounded up: 0 once it has fired (SDM 25.5.1, 27.3.4)."""
        deadline = self._preemption_deadline
        if deadline is None:
            return 0
        rate = self.caps.preemption_timer_rate
        return -(-max(0, deadline - self.vcpu.clock.now_ns()) >> rate)

    def _arm_preemption_timer(self) -> None:
        """The timer counts down from its VMCS value at TSC >> rate (SDM 25.5.1)."""
        if PinBasedControls.ACTIVATE_PREEMPTION_TIMER not in self.intercepts.pin:
            self._preemption_deadline = None
            return
        ticks = self.vmcs.read(F.VMX_PREEMPTION_TIMER_VALUE)
        self._preemption_deadline = self.vcpu.clock.now_ns() + (ticks << self.caps.preemption_timer_rate)

    # --- stops ----------------------------------------------------------------------------
    def _handle_stop(self, stop: Stop) -> None:
        if stop.kind is StopKind.HOOK_ERROR:
            assert stop.error is not None
            raise stop.error
        handler = _STOP_HANDLERS.get(stop.kind)
        if handler is not None:
            handler(self, stop)

    def _on_exception(self, stop: Stop) -> None:
        if stop.software:
            self._software_event(stop)
            return
        vector = stop.vector
        error = stop.error_code if vector in _ERROR_CODE_VECTORS else None
        self.raise_exception(vector, error)

    def _software_event(self, stop: Stop) -> None:
        """INT n, INT3, INTO, INT1: Unicorn reports them with RIP already past the instruction."""
        rip = self.vcpu.rip
        kind, length = _software_kind(self.vcpu.bytes_before(rip, 2), stop.vector)
        exits = kind is not EventType.SOFTWARE_INTERRUPT and self.intercepts.exception_exits(stop.vector, None)
        if not exits:
            self._pending_event = (Event(stop.vector, kind), rip, length)
            return
        self.vcpu.rip = rip - length
        self.vcpu.retire_emulated(-1)
        self._software_exception_exit(stop.vector, kind, rip - length, length)

    def _software_exception_exit(self, vector: int, kind: EventType, rip: int, length: int) -> None:
        """Exit 0 for INT3/INTO/INT1 with the exception bitmap bit set: fault-like, RIP at the
        instruction, its length for re-injection (SDM 27.2.2, 27.2.5)."""
        info = InterruptionInfo(vector, InterruptionType(int(kind)))
        self._take(self._make_exit(ExitReason.EXCEPTION_OR_NMI, rip, instruction_length=length,
                                   interruption=info, detail=f"vector {vector}"))

    def _int1(self, insn: Instruction) -> None:
        """INT1/ICEBP (F1), which Unicorn reports as an invalid opcode: a privileged software
        exception, vector 1, delivered after the instruction (SDM Vol. 3 24.8.3, Vol. 2 INT1)."""
        kind = EventType.PRIVILEGED_SOFTWARE_EXCEPTION
        if self.intercepts.exception_exits(1, None):
            self._software_exception_exit(1, kind, insn.address, insn.size)
            return
        self.vcpu.rip = insn.next_address
        self.vcpu.retire_emulated()
        self._pending_event = (Event(1, kind), insn.next_address, insn.size)

    def _on_translation_fault(self, stop: Stop) -> None:
        fault = stop.fault
        if isinstance(fault, NonCanonicalAddress):
            self.raise_exception(GP, 0)
            return
        if isinstance(fault, GuestPageFault):
            self.raise_exception(PAGE_FAULT, fault.error_code, cr2=stop.fault_address or fault.linear)
            return
        assert fault is not None
        self._take(self.translation_exit(fault, stop.fault_address))

    def _on_invalid_opcode(self, stop: Stop) -> None:
        insn = self.vcpu.decode_at()
        if insn is not None and insn.id == C.X86_INS_INT1:
            self._int1(insn)
            return
        reason = VMX_INSTRUCTION_EXITS.get(insn.id) if insn is not None else None
        if reason is None or insn is None:
            self.raise_exception(6)
            return
        self._take(self._make_exit(reason, insn.address, instruction_length=insn.size,
                                   detail=insn.mnemonic, instruction=insn))

    def _on_hlt(self, stop: Stop) -> None:
        """Unicorn executed HLT; with HLT exiting this is a fault-like exit at the HLT."""
        rip = self.vcpu.rip - 1
        if P.HLT_EXITING in self.intercepts.primary:
            exit = self._make_exit(ExitReason.HLT, rip, instruction_length=1, completes_natively=True)
            self._advanced = False
            decision = vm_exit(self, exit)
            if not self._advanced:
                self._rewind = {U.UC_X86_REG_RIP: rip}
            self._after_exit(exit, decision)
            return
        self.activity = Activity.HLT


def _software_kind(before: bytes, vector: int) -> tuple[EventType, int]:
    """Which instruction raised a software event, from the bytes that precede RIP."""
    if before[-1:] == b"\xcc" and vector == 3:
        return EventType.SOFTWARE_EXCEPTION, 1
    if before[-1:] == b"\xce" and vector == 4:
        return EventType.SOFTWARE_EXCEPTION, 1
    if before[-1:] == b"\xf1" and vector == 1:
        return EventType.PRIVILEGED_SOFTWARE_EXCEPTION, 1
    return EventType.SOFTWARE_INTERRUPT, 2


_ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21})
_STOP_HANDLERS: dict[StopKind, Callable[[VmxCpu, Stop], None]] = {
    StopKind.EXCEPTION: VmxCpu._on_exception,
    StopKind.TRANSLATION_FAULT: VmxCpu._on_translation_fault,
    StopKind.INVALID_OPCODE: VmxCpu._on_invalid_opcode,
    StopKind.HALT: VmxCpu._on_hlt,
}
