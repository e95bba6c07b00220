"""Classic trap-and-emulate by ring compression, as a VMM had to do it before VT-x.

Per vCPU. The firmware (real mode, then 32-bit code in ROM) runs as under `--mode vtx`: a
pre-VT VMM ran the BIOS by other means (emulation, a virtual-8086 monitor). The first
instruction fetched at CPL 0 in 32-bit protected mode from outside the ROM (the kernel's
entry) stops the vCPU, and from there on the guest kernel runs deprivileged:

- the processor's GDTR, IDTR and TR point at the VMM's shadow tables in a window at the top
  of the linear address space (compression.py); the guest's own GDTR/IDTR/TR/LDTR, its IF
  and its CR0 are virtual state kept here;
- the kernel's segments are reloaded with RPL 1 from DPL 1 shadow descriptors: the kernel
  runs at real CPL 1 (its user code stays at CPL 3); RFLAGS.IOPL is 0 and the real IF 1;
- the VMCS keeps no instruction exiting at all (no HLT/CR/MSR/INVLPG/DR exiting, no I/O or
  MSR bitmaps): it is used only as the trap mechanism a pre-VT VMM had through its own IDT:
  every exception vector exits (exception bitmap all ones), as do external interrupts (and
  CPUID, which VT-x cannot stop from exiting; the hypervisor answers it as under vtx).

At CPL 1 every privileged instruction faults with #GP (SDM Vol. 3A 5.9, and each
instruction's protected-mode exceptions in Vol. 2): emulate.py decodes the instruction at
RIP and performs it on the virtual state. Every event destined for the guest (a reflected
exception, an external interrupt, INT n through a DPL 0 gate) is delivered by the VMM on
the *virtual* processor (`_virtual_view`): guest IDT and GDT, virtual CPL 0, virtual IF,
with the machine's delivery microcode, so the frame holds what bare hardware pushes (CS with
RPL 0, the virtual IF); the handler's IRET then returns to a more privileged RPL, faults and
is emulated, which is how the VMM learns the virtual IF again. Sensitive but unprivileged
instructions run natively and leak (README, ARCHITECTURE.md).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

import unicorn.x86_const as U

from vtemu.hv.handlers import events
from vtemu.hv.outcome import HALT, RESUME, Halt, Outcome, RunEnd, Shutdown
from vtemu.machine import layout
from vtemu.machine.cpustate import (DESC_DPL_SHIFT, HF_CS32, HF_CS64, HF_PE, CpuContext, Seg,
                                    SegmentCache)
from vtemu.machine.delivery import Event, EventType, TripleFault, UnsupportedDelivery, deliver
from vtemu.machine.memory import HostRegion
from vtemu.machine.translation import Fill, KernelCodeFetch, MemoryAccess, TranslationFault
from vtemu.machine.vcpu import Stop, StopKind
from vtemu.modes.deprivileged import compression as shadow
from vtemu.modes.deprivileged.emulate import emulate_trap
from vtemu.vmx.controls import ControlKind, PinBasedControls
from vtemu.vmx.controls import PrimaryProcessorControls as P
from vtemu.vmx.controls import SecondaryProcessorControls as S
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.interruption import InterruptionType

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit

RFLAGS_IF = 1 << 9
RFLAGS_IOPL = 3 << 12
CR0_PE, CR0_ET, CR0_NE = 1, 1 << 4, 1 << 5
ROM_ALIAS = (0xF_0000, 0x10_0000)          # the firmware's low alias (layout.py)
PAGE_FAULT = 14

# The VMCS of a ring-compressing VMM: traps only (see the module docstring).
PIN = PinBasedControls.EXTERNAL_INTERRUPT_EXITING | PinBasedControls.NMI_EXITING
PRIMARY = P.USE_TSC_OFFSETTING | P.ACTIVATE_SECONDARY_CONTROLS
SECONDARY = S.ENABLE_EPT | S.UNRESTRICTED_GUEST | S.ENABLE_RDTSCP
ALL_EXCEPTIONS = 0xFFFF_FFFF


class EnterKernel(KernelCodeFetch):
    """The guest fetched kernel code at CPL 0: stop, so the VMM can deprivilege it."""

    def __init__(self, linear: int) -> None:
        super().__init__(linear, "kernel entry")


@dataclass
class VirtualCpu:
    """What the guest believes about its processor while it really runs at CPL 1."""

    gdt: SegmentCache = field(default_factory=lambda: SegmentCache(0, 0, 0xFFFF, 0))
    idt: SegmentCache = field(default_factory=lambda: SegmentCache(0, 0, 0xFFFF, 0))
    tr: SegmentCache = field(default_factory=lambda: SegmentCache(0, 0, 0xFFFF, 0x8B00))
    ldt: SegmentCache = field(default_factory=lambda: SegmentCache(0, 0, 0xFFFF, 0x8200))
    interrupts_enabled: bool = False
    cr0: int = 0
    halted: bool = False


@dataclass
class DeprivilegedCounters:
    traps: int = 0                       # #GP exits the VMM emulated
    reflected: int = 0                   # exceptions handed to the guest's handlers
    interrupts: int = 0                  # external interrupts delivered
    emulated: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"traps": self.traps, "reflected": self.reflected,
                "interrupts": self.interrupts, "emulated": dict(self.emulated)}


class DeprivilegedEngine:
    counter_section = "deprivileged"       # the --stats line its counters go to

    def __init__(self, cpu: "VmxCpu", partition: "Partition") -> None:
        self.cpu = cpu
        self.vcpu = cpu.vcpu
        self.partition = partition
        self.virtual = VirtualCpu()
        self.counters = DeprivilegedCounters()
        self.engaged = False
        self.emulating = False
        self._window: HostRegion | None = None
        self._gdt_bytes = 0
        self.vcpu.overlay = self
        self.vcpu.vmm_translator = _ProcessorView(self)
        cpu.mode_engine = self

    # --- ModeEngine -----------------------------------------------------------------------
    def takes_exits(self) -> bool:
        """While the VMM emulates an instruction it hands parts of it (I/O, MSRs) to the
        hypervisor's routines as calls, not as VM exits."""
        return self.emulating

    def before_run(self) -> bool:
        if self.engaged:
            state = self.vcpu.state()
            if state.cpl == 0 and state.hflags & HF_PE:   # SYSENTER loaded a ring-0 CS itself
                self.recompress()
        elif self._at_kernel_entry(self.vcpu.state(), self.vcpu.linear_rip()):
            self.engage()
        return True

    def after_run(self, stop: Stop) -> Stop:
        if stop.kind is StopKind.TRANSLATION_FAULT and isinstance(stop.fault, EnterKernel):
            return Stop(StopKind.REQUESTED, stop.retired)
        return stop

    # --- Overlay: the VMM window and the moment of entry --------------------------------------
    def fill(self, linear: int, access: MemoryAccess, context: CpuContext) -> Fill | None:
        if self.engaged:
            return self.window_fill(linear)
        if access is MemoryAccess.FETCH and self._at_kernel_entry(context, linear):
            raise EnterKernel(linear)
        return None

    @staticmethod
    def _at_kernel_entry(context: CpuContext, linear: int) -> bool:
        """CPL 0, 32-bit flat protected mode, code outside the firmware ROM."""
        hflags = context.hflags
        if context.cpl != 0 or not hflags & HF_PE or hflags & HF_CS64 or not hflags & HF_CS32:
            return False
        if context.cs_base != 0 or ROM_ALIAS[0] <= linear < ROM_ALIAS[1]:
            return False
        return linear < shadow.WINDOW_BASE

    def window_fill(self, linear: int) -> Fill | None:
        """The VMM window, for accesses the processor makes on its own (descriptor tables)."""
        if not self.engaged or self._window is None or not shadow.in_window(linear):
            return None
        hpa = self._window.hpa + (linear & ~0xFFF) - shadow.WINDOW_BASE
        return Fill(hpa, readable=True, writable=True, executable=False, vmm=True)

    # --- deprivileging ---------------------------------------------------------------------
    def engage(self) -> None:
        """Take the kernel over: virtual state from the real one, then compress."""
        context = self.vcpu.context.load()
        self.virtual = VirtualCpu(gdt=context.table("gdt"), idt=context.table("idt"),
                                  tr=context.table("tr"), ldt=context.table("ldt"),
                                  interrupts_enabled=bool(self.vcpu.read(U.UC_X86_REG_RFLAGS) & RFLAGS_IF),
                                  cr0=self.vcpu.read(U.UC_X86_REG_CR0))
        self._map_window()
        self._program_vmcs()
        self.engaged = True
        self.recompress()

    def _map_window(self) -> None:
        if self._window is not None:
            return
        hpa = layout.deprivileged_window_hpa(self.partition.index, self.vcpu.index)
        self._window = self.partition.host.add(HostRegion(
            f"partition {self.partition.index} vCPU {self.vcpu.index} deprivileged VMM window",
            hpa, shadow.WINDOW_SIZE))
        self.partition.host.map_into(self.vcpu.engine.uc, [self._window])

    def _program_vmcs(self) -> None:
        """VMWRITEs of the trap-only controls (taken at the next VM entry)."""
        vmcs, caps = self.cpu.vmcs, self.cpu.caps
        for field_, kind, value in ((F.PIN_BASED_VM_EXEC_CONTROL, ControlKind.PIN, PIN),
                                    (F.CPU_BASED_VM_EXEC_CONTROL, ControlKind.PRIMARY, PRIMARY),
                                    (F.SECONDARY_VM_EXEC_CONTROL, ControlKind.SECONDARY, SECONDARY)):
            vmcs.write(field_, int(value) | caps.capability(kind).allowed0)
        vmcs.write(F.EXCEPTION_BITMAP, ALL_EXCEPTIONS)
        vmcs.write(F.PAGE_FAULT_ERROR_CODE_MASK, 0)
        vmcs.write(F.PAGE_FAULT_ERROR_CODE_MATCH, 0)
        self.cpu.reload_controls()

    def recompress(self) -> None:
        """Shadow tables from the guest's, then the live state at ring 1."""
        context = self.vcpu.context.load()
        self._refresh_shadows()
        self._load_shadow_tables(context)
        if context.cpl == 0:
            self.virtual.interrupts_enabled = bool(self.vcpu.read(U.UC_X86_REG_RFLAGS) & RFLAGS_IF)
            for seg in (Seg.CS, Seg.DS, Seg.ES, Seg.FS, Seg.GS, Seg.SS):   # SS last: the CPL
                _compress_segment(context, seg)
        context.store()
        self._set_real_flags()

    def _set_real_flags(self) -> None:
        """IOPL 0 (so CLI, STI, I/O fault at CPL 1); IF 1 while the kernel runs: the VMM's own
        interrupts must stay on. User code keeps the flags its IRET gave it."""
        rflags = self.vcpu.read(U.UC_X86_REG_RFLAGS)
        if self.vcpu.context.load().cpl == 1:
            rflags = (rflags & ~RFLAGS_IOPL) | RFLAGS_IF
        self.vcpu.write(U.UC_X86_REG_RFLAGS, rflags)
        cr0 = self.vcpu.read(U.UC_X86_REG_CR0)
        if cr0 & (CR0_NE | CR0_ET) != CR0_NE | CR0_ET:
            # VMX operation requires CR0.NE = 1 (IA32_VMX_CR0_FIXED0, SDM A.7); this VMM
            # traps every CR0 access instead of shadowing it, so the real bit shows (SMSW).
            self.vcpu.write(U.UC_X86_REG_CR0, cr0 | CR0_NE | CR0_ET)

    def _refresh_shadows(self) -> None:
        """Copy the guest's GDT (compressed), IDT and ring-0 stack into the window. Done at
        every trap, so the copies follow the guest's tables between traps."""
        assert self._window is not None
        base = self._window.hpa
        gdt = self._read_table(self.virtual.gdt)
        stale = max(0, self._gdt_bytes - len(gdt))
        self.partition.host.write(base + shadow.GDT_OFFSET, shadow.shadow_gdt(gdt) + bytes(stale))
        self._gdt_bytes = len(gdt)
        tss = shadow.tss_descriptor(shadow.window_linear(shadow.TSS_OFFSET), shadow.TSS_LIMIT)
        self.partition.host.write(base + shadow.GDT_OFFSET + shadow.VMM_TSS_SELECTOR, tss.to_bytes(8, "little"))
        idt = self._read_table(self.virtual.idt)[:256 * 8]
        self.partition.host.write(base + shadow.IDT_OFFSET, idt)
        esp0, ss0 = self._guest_ring0_stack()
        self.partition.host.write(base + shadow.TSS_OFFSET, shadow.vmm_tss(esp0, ss0 | 1 if ss0 else 0))

    def _read_table(self, table: SegmentCache) -> bytes:
        try:
            return self.vcpu.read_linear(table.base, min(table.limit + 1, shadow.GDT_LIMIT + 1))
        except TranslationFault:
            return b""          # not mapped (yet): the guest cannot use it either

    def _guest_ring0_stack(self) -> tuple[int, int]:
        tr = self.virtual.tr
        if tr.selector & ~3 == 0 or tr.limit < shadow.TSS_SS0 + 1:
            return 0, 0
        try:
            raw = self.vcpu.read_linear(tr.base + shadow.TSS_ESP0, 6)
        except TranslationFault:
            return 0, 0
        return int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:6], "little")

    def _load_shadow_tables(self, context: CpuContext) -> None:
        context.set_table("gdt", SegmentCache(0, shadow.window_linear(shadow.GDT_OFFSET), shadow.GDT_LIMIT, 0))
        context.set_table("idt", SegmentCache(0, shadow.window_linear(shadow.IDT_OFFSET),
                                              min(self.virtual.idt.limit, 256 * 8 - 1), 0))
        context.set_table("tr", SegmentCache(shadow.VMM_TSS_SELECTOR, shadow.window_linear(shadow.TSS_OFFSET),
                                             shadow.TSS_LIMIT, (shadow.TSS32_BUSY << 8) | (1 << 15)))
        context.set_table("ldt", self.virtual.ldt)

    # --- the virtual processor ----------------------------------------------------------------
    def virtual_cpl(self) -> int:
        cpl = self.vcpu.state().cpl
        return 0 if cpl == 1 else cpl

    def virtual_if(self) -> bool:
        if self.vcpu.state().cpl == 3:
            return bool(self.vcpu.read(U.UC_X86_REG_RFLAGS) & RFLAGS_IF)
        return self.virtual.interrupts_enabled

    @contextmanager
    def virtual_view(self) -> Iterator[CpuContext]:
        """The live vCPU shows the guest's virtual processor (its tables, CPL 0, its IF) while
        the VMM runs processor logic on it; afterwards whatever changed becomes virtual state
        and the kernel is compressed again."""
        context = self.vcpu.context.load()
        kernel = context.cpl == 1
        if kernel:
            for seg in (Seg.CS, Seg.SS):
                _decompress_segment(context, seg)
        for name in ("gdt", "idt", "tr", "ldt"):
            context.set_table(name, getattr(self.virtual, name))
        context.store()
        if kernel:
            self._write_if(self.virtual.interrupts_enabled)
        try:
            yield context
        finally:
            context = self.vcpu.context.load()
            for name in ("gdt", "idt", "tr", "ldt"):
                setattr(self.virtual, name, context.table(name))
            self.recompress()

    def _write_if(self, enabled: bool) -> None:
        rflags = self.vcpu.read(U.UC_X86_REG_RFLAGS)
        self.vcpu.write(U.UC_X86_REG_RFLAGS, (rflags | RFLAGS_IF) if enabled else (rflags & ~RFLAGS_IF))

    def deliver(self, event: Event, return_rip: int) -> Outcome:
        """Deliver an event the way the guest's own processor would (SDM Vol. 3A 6.12)."""
        try:
            with self.virtual_view():
                deliver(self.vcpu, event, return_rip)
        except TripleFault:
            # The virtual processor shuts down; reported as the hypervisor reports a
            # triple-fault exit (hv/handlers/events.py).
            return Shutdown(RunEnd.TRIPLE_FAULT, f"triple fault (while delivering vector {event.vector})",
                            dump=True)
        except UnsupportedDelivery as unsupported:
            return Shutdown(RunEnd.UNHANDLED_EXIT, f"deprivileged mode: {unsupported}", dump=True)
        if event.type is EventType.HARDWARE_EXCEPTION:
            self.cpu.exceptions_delivered += 1
        return RESUME

    # --- exits ------------------------------------------------------------------------------
    def on_exception(self, exit: "VmExit") -> Outcome:
        if not self.engaged:
            return events.handle_exception(exit, self.cpu, self.partition)
        info = exit.interruption
        assert info is not None
        if not self.vcpu.in_code_hook:
            self._forget_fault()
        if info.type is InterruptionType.HARDWARE_EXCEPTION and info.vector == 13 and self.virtual_cpl() == 0:
            vectoring = exit.idt_vectoring
            if vectoring is not None and vectoring.type is InterruptionType.SOFTWARE_INTERRUPT:
                return self.soon(lambda: self._software_interrupt(exit, vectoring.vector))
            return self.soon(lambda: emulate_trap(self, exit))
        return self.soon(lambda: self.reflect(exit))

    def _software_interrupt(self, exit: "VmExit", vector: int) -> Outcome:
        """INT n met a DPL 0 gate at CPL 1 (#GP(vector * 8 + 2), SDM 6.12.1.1): the virtual
        ring 0 may use it, so the VMM delivers it. The exit reports the INT itself and its
        length (SDM 27.2.4): the return address is past it."""
        if exit.interruption_error != (vector << 3) | 2:
            return self.reflect(exit)
        self.counters.traps += 1
        self.counters.emulated["int"] = self.counters.emulated.get("int", 0) + 1
        return self.deliver(Event(vector, EventType.SOFTWARE_INTERRUPT),
                            exit.guest_rip + exit.instruction_length)

    def _forget_fault(self) -> None:
        """The fault reached the VMM, not QEMU's delivery code: clear QEMU's record of it, or
        the next fault would be reported as a double fault (DESIGN.md)."""
        context = self.vcpu.context.load()
        context.forget_exception_in_flight()
        context.store()

    def reflect(self, exit: "VmExit") -> Outcome:
        """An exception that is the guest's own: its handler gets it, as on bare hardware."""
        info = exit.interruption
        assert info is not None
        self.counters.reflected += 1
        if info.type is InterruptionType.NMI:
            return self.deliver(Event(2, EventType.NMI), exit.guest_rip)
        if info.vector == PAGE_FAULT:
            self.vcpu.write(U.UC_X86_REG_CR2, exit.qualification)
        kind = EventType(int(info.type))
        return_rip = exit.guest_rip + (exit.instruction_length if info.type.is_software else 0)
        error = exit.interruption_error if info.deliver_error_code else None
        return self.deliver(Event(info.vector, kind, error), return_rip)

    def soon(self, action: Callable[[], Outcome]) -> Outcome:
        """Run `action` now, or, inside a code hook (a site's #GP), once the vCPU has stopped:
        descriptor caches cannot be edited while Unicorn runs (vmx/cpu.py)."""
        if not self.vcpu.in_code_hook:
            return action()
        self.cpu.perform_after_stop(lambda: self._apply(action()))
        return RESUME

    def _apply(self, outcome: Outcome) -> None:
        if isinstance(outcome, Halt):
            self.cpu.blocked = True
        elif isinstance(outcome, Shutdown):
            self.partition.end(outcome)

    def on_external_interrupt(self, exit: "VmExit") -> Outcome:
        if not self.engaged:
            return events.handle_external_interrupt(exit, self.cpu, self.partition)
        if exit.interruption is not None:
            self.partition.pending_vectors(self.cpu).append(exit.interruption.vector)
        return self.service_interrupts()

    def on_interrupt_window(self, exit: "VmExit") -> Outcome:
        if not self.engaged:
            return events.handle_interrupt_window(exit, self.cpu, self.partition)
        return self.service_interrupts()

    def service_interrupts(self) -> Outcome:
        """Deliver the oldest pending interrupt if the virtual IF allows it, else wait: for
        the window after STI, or for the guest to enable interrupts."""
        pending = self.partition.pending_vectors(self.cpu)
        shadowed = self.vcpu.state().interrupt_shadow
        outcome: Outcome = HALT if self.virtual.halted else RESUME
        if pending and self.virtual_if() and not shadowed:
            self.virtual.halted = False
            self.counters.interrupts += 1
            outcome = self.deliver(Event(pending.pop(0), EventType.EXTERNAL_INTERRUPT), self.vcpu.rip)
        self._window_exiting(bool(pending) and self.virtual_if() and shadowed)
        return outcome

    def _window_exiting(self, wanted: bool) -> None:
        controls = self.cpu.vmcs.read(F.CPU_BASED_VM_EXEC_CONTROL)
        if wanted != bool(controls & P.INTERRUPT_WINDOW_EXITING):
            self.cpu.vmcs.write(F.CPU_BASED_VM_EXEC_CONTROL, controls ^ P.INTERRUPT_WINDOW_EXITING)

    def counter_values(self) -> dict[str, object]:
        return self.counters.as_dict()


class _ProcessorView:
    """Linear addresses as the processor's own microcode (event delivery) sees them: the VMM
    window where the real GDTR, IDTR and TR point, the guest's paging elsewhere."""

    def __init__(self, engine: DeprivilegedEngine) -> None:
        self.engine = engine

    def translate(self, paging, linear: int, access: MemoryAccess, user: bool) -> Fill:
        """Reads only: delivery reads gates, descriptors and the TSS there; the VMM's own
        emulation (string I/O, operands) must never write the window for the guest."""
        fill = self.engine.window_fill(linear) if access is MemoryAccess.READ else None
        if fill is not None:
            return fill
        return self.engine.vcpu.translator.translate(paging, linear, access, user)


def _compress_segment(context: CpuContext, seg: Seg) -> None:
    """A ring-0 segment of the kernel, reloaded at ring 1: RPL 1, DPL 1, limit truncated."""
    cache = context.segment(seg)
    if cache.selector & ~3 == 0 or cache.dpl != 0 or cache.system:
        return
    limit = cache.limit
    if cache.base < shadow.WINDOW_BASE <= cache.base + limit:
        limit = shadow.WINDOW_BASE - cache.base - 1
    context.load_segment(seg, SegmentCache(cache.selector | 1, cache.base, limit,
                                           cache.flags | (1 << DESC_DPL_SHIFT)))


def _decompress_segment(context: CpuContext, seg: Seg) -> None:
    """The virtual view of a compressed kernel segment: RPL 0, DPL 0 (its limit stays cut)."""
    cache = context.segment(seg)
    if cache.selector & ~3 == 0 or cache.dpl != 1:
        return
    context.load_segment(seg, SegmentCache(cache.selector & ~3, cache.base, cache.limit,
                                           cache.flags & ~(3 << DESC_DPL_SHIFT)))
