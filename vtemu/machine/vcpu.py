"""A virtual CPU: Unicorn executing guest code, with every path out of it made explicit.

The engine is created in UC_MODE_64 and loaded with a context saved from a UC_MODE_16
engine, so the CPU starts in real mode yet every register (RIP, R8-R15, CRs) stays
readable in every mode; guest code then switches modes by itself.

Translation runs in Unicorn's virtual-TLB mode: each TLB miss asks the vCPU's Translator
(nested paging or shadow paging, supplied by the hypervisor) for the host-physical page and
the permissions. A refused fill stops the CPU with the fault recorded, RIP at the faulting
instruction. Fetch fills also discover sensitive instructions (see sites.py).

What leaves the guest is reported to an event sink (the VMX layer): port I/O, CPUID, RDTSC
and sensitive-instruction sites call it inline from Unicorn's hooks; exceptions, #UD,
refused fills, HLT and an exhausted instruction budget end `run()` with a Stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable, Protocol

import unicorn
import unicorn.x86_const as U

from vtemu.machine import layout
from vtemu.machine.addr import PAGE_MASK, PAGE_SIZE
from vtemu.machine.clock import GuestClock
from vtemu.machine.code_pages import SharedCodePages
from vtemu.machine.cpustate import HF_CS32, HF_CS64, CpuContext, Seg, SegmentCache
from vtemu.machine.decode import CodeMode, Decoder, Instruction, MAX_INSN_LENGTH
from vtemu.machine.memory import HostMemory, HostRegion
from vtemu.machine.sites import Site, SiteKind, SiteRegistry
from vtemu.machine.translation import (Fill, GuestPageFault, MemoryAccess, NonCanonicalAddress,
                                      Overlay, PagingRegs, TranslationFault, Translator,
                                      canonical)
from vtemu.machine.unicorn_ffi import UC_ERR_EXCEPTION, UC_ERR_INSN_INVALID, UC_ERR_OK, Engine

UC_MEM_READ = unicorn.UC_MEM_READ
UC_MEM_WRITE = unicorn.UC_MEM_WRITE
UC_MEM_FETCH = unicorn.UC_MEM_FETCH
PROT_R, PROT_W, PROT_X = unicorn.UC_PROT_READ, unicorn.UC_PROT_WRITE, unicorn.UC_PROT_EXEC

# Reset state, Intel SDM Vol. 3A 9.1.1 Table 9-1.
RESET_CR0 = 0x60000010
RESET_RFLAGS = 0x2
RESET_EDX = 0x000306A9  # processor signature reported in EDX at reset (family 6)
RESET_DR6 = 0xFFFF0FF0
RESET_DR7 = 0x400
EFER_LMA = 1 << 10


class GuestException(Exception):
    """An architectural exception raised by vtemu's own emulation of an instruction."""

    def __init__(self, vector: int, error_code: int | None = None) -> None:
        super().__init__(f"exception {vector}" + ("" if error_code is None else f"({error_code:#x})"))
        self.vector = vector
        self.error_code = error_code


class CodeObserver(Protocol):
    """Someone who keeps code derived from guest pages (a binary translator): data TLB entries
    for its pages never allow writing, and the first write is announced."""

    def watches(self, hpa_page: int) -> bool: ...
    def written(self, hpa_page: int) -> None: ...


class CpuEvents(Protocol):
    """The VMX layer: decides, for each event, whether it exits to the hypervisor."""

    def port_in(self, port: int, size: int) -> int: ...
    def port_out(self, port: int, size: int, value: int) -> None: ...
    def cpuid(self) -> None: ...
    def rdtsc(self, with_aux: bool) -> None: ...
    def sensitive_instruction(self, site: Site) -> None: ...


class StopKind(Enum):
    BUDGET = "instruction budget reached"
    HALT = "hlt"
    REQUESTED = "stop requested"
    TRANSLATION_FAULT = "translation fault"
    EXCEPTION = "exception"
    INVALID_OPCODE = "invalid opcode"
    HOOK_ERROR = "error in an exit handler"


@dataclass(frozen=True)
class Stop:
    kind: StopKind
    retired: int              # instructions retired in this slice (0 when not counting)
    vector: int = -1          # EXCEPTION: the vector Unicorn raised
    software: bool = False    # EXCEPTION: INT n / INT3 / INTO (RIP already after it)
    error_code: int = 0       # EXCEPTION: error code QEMU computed
    fault: TranslationFault | None = None
    fault_access: MemoryAccess | None = None
    fault_address: int = 0    # exact linear address of the refused access
    error: BaseException | None = None


class _Phase(Enum):
    NONE = 0
    BEFORE = 1   # in a code hook: the instruction has not executed
    DURING = 2   # in an instruction or fill hook: the instruction will complete


class VCpu:
    def __init__(self, index: int, memory: HostMemory, clock: GuestClock,
                 translator: Translator, events: CpuEvents | None = None,
                 regions: list[HostRegion] | None = None) -> None:
        """`regions`: the host memory this vCPU's physical space contains (default: all)."""
        self.index = index
        self.memory = memory
        self.clock = clock
        self.translator = translator
        self.vmm_translator: Translator | None = None
        self.overlay: Overlay | None = None
        self.callout: Callable[[], None] = self._no_callout
        self.code_observer: CodeObserver | None = None
        self.write_observers: list[Callable[[int, int], None]] = []
        self.events: CpuEvents = events if events is not None else _NoEvents()
        self.decoder = Decoder()
        self.engine = Engine(_real_mode_engine())
        self.context = CpuContext(self.engine)
        self.sites = SiteRegistry(self.decoder, self._plant_site, self._remove_site)
        # Code pages shared with the other vCPUs of the partition (code_pages.py); alone until
        # it joins the partition's registry. `_writable`: pages this TLB may write unseen.
        self.code_pages = SharedCodePages()
        self.code_pages.join(self)
        self._writable: set[int] = set()
        memory.map_into(self.engine.uc, regions)
        self.engine.uc.ctl_set_tlb_mode(unicorn.UC_TLB_VIRTUAL)
        self.engine.uc.ctl_exits_enabled(True)  # empty exit set: no "until" address to invalidate
        self._install_hooks()
        self.instructions_retired = 0
        self.counting = False
        self._phase = _Phase.NONE
        self._stop: Stop | None = None
        self._fault: tuple[TranslationFault, MemoryAccess] | None = None
        self._deferred_flush = False
        self._running = False
        self._epoch = 0
        self._loaded_epoch = -1
        self._dead_hooks = False
        self._refuse_fills = False
        self._emulated_in_hook = False
        self._stop_phase = _Phase.NONE
        self.tlb_fills = 0
        self._debug_hook: object = None
        self._debug_check: Callable[[int], bool] | None = None
        self._debug_stop_at: int | None = None
        clock.attach_progress(self._running_instructions)
        clock.on_live.append(self._clock_went_live)
        self.reset()

    # --- setup ---------------------------------------------------------------------------
    def _install_hooks(self) -> None:
        engine = self.engine
        engine.hook_in(self._on_in)
        engine.hook_out(self._on_out)
        engine.hook_skipping_insn(U.UC_X86_INS_CPUID, self._on_cpuid)
        engine.hook_skipping_insn(U.UC_X86_INS_RDTSC, lambda: self._on_rdtsc(False))
        engine.hook_skipping_insn(U.UC_X86_INS_RDTSCP, lambda: self._on_rdtsc(True))
        engine.hook_interrupt(self._on_interrupt)
        engine.hook_invalid(self._on_invalid)
        engine.hook_syscall(lambda: self.callout())
        engine.hook_tlb_fill(self._on_tlb_fill)

    def reset(self) -> None:
        """Architectural power-on state (SDM Vol. 3A 9.1.1, Table 9-1)."""
        write = self.engine.write
        for reg in (U.UC_X86_REG_RAX, U.UC_X86_REG_RBX, U.UC_X86_REG_RCX, U.UC_X86_REG_RSI,
                    U.UC_X86_REG_RDI, U.UC_X86_REG_RBP, U.UC_X86_REG_RSP):
            write(reg, 0)
        write(U.UC_X86_REG_RDX, RESET_EDX)
        write(U.UC_X86_REG_CR0, RESET_CR0)
        write(U.UC_X86_REG_RFLAGS, RESET_RFLAGS)
        write(U.UC_X86_REG_DR6, RESET_DR6)
        write(U.UC_X86_REG_DR7, RESET_DR7)
        context = self.context.load()
        code = SegmentCache(layout.RESET_CS_SELECTOR, layout.RESET_CS_BASE, 0xFFFF,
                            SegmentCache.real_mode(0).flags | (0xB << 8))
        context.load_segment(Seg.CS, code)
        for seg in (Seg.DS, Seg.ES, Seg.SS, Seg.FS, Seg.GS):
            context.load_segment(seg, SegmentCache.real_mode(0))
        for table in ("gdt", "idt"):
            context.set_table(table, SegmentCache(0, 0, 0xFFFF, 0))
        context.set_table("ldt", SegmentCache(0, 0, 0xFFFF, 0x8200))
        context.set_table("tr", SegmentCache(0, 0, 0xFFFF, 0x8B00))
        context.store()
        write(U.UC_X86_REG_RIP, layout.RESET_IP)
        self.tpr = 0  # CR8 / task-priority register (Unicorn's own CR8 reads as 0)

    # --- registers -----------------------------------------------------------------------
    def read(self, reg: int) -> int:
        return self.engine.read(reg)

    def write(self, reg: int, value: int) -> None:
        self._epoch += 1
        self.engine.write(reg, value)

    def state(self) -> CpuContext:
        """The CPU context, loaded at most once per hook or between register writes: exits
        read hflags and CS several times and each load is a call into Unicorn."""
        if self._loaded_epoch != self._epoch:
            self.context.load()
            self._loaded_epoch = self._epoch
        return self.context

    @property
    def rip(self) -> int:
        return self.engine.read(U.UC_X86_REG_RIP)

    @rip.setter
    def rip(self, value: int) -> None:
        self.engine.write(U.UC_X86_REG_RIP, value)

    def read_msr(self, msr: int) -> int:
        return self.engine.uc.reg_read(U.UC_X86_REG_MSR, msr)

    def write_msr(self, msr: int, value: int) -> None:
        self.engine.uc.reg_write(U.UC_X86_REG_MSR, (msr, value))

    def paging_regs(self) -> PagingRegs:
        read = self.engine.read
        return PagingRegs(read(U.UC_X86_REG_CR0), read(U.UC_X86_REG_CR3),
                          read(U.UC_X86_REG_CR4), self.read_msr(0xC0000080))

    def code_mode(self) -> CodeMode:
        hflags = self.context.load().hflags
        if hflags & HF_CS64:
            return CodeMode.BITS64
        return CodeMode.BITS32 if hflags & HF_CS32 else CodeMode.BITS16

    def segment(self, seg: Seg) -> SegmentCache:
        return self.context.load().segment(seg)

    def linear_rip(self) -> int:
        """CS.base + RIP: the linear address of the next instruction."""
        return (self.segment(Seg.CS).base + self.rip) & 0xFFFFFFFFFFFFFFFF

    # --- guest memory as the VMM sees it -------------------------------------------------
    def translate(self, linear: int, access: MemoryAccess, user: bool = False) -> int:
        """Linear -> host-physical for a VMM-performed access; raises TranslationFault.

        These go through `vmm_translator` when one is set: under shadow paging the hypervisor
        reads and writes guest-linear memory through the guest's own tables, not through the
        shadow the processor fills its TLB from (which may not hold the page yet)."""
        translator = self.vmm_translator or self.translator
        fill = self._translate(self.paging_regs(), linear, access, user, translator)
        return fill.hpa | (linear & (PAGE_SIZE - 1))

    def _translate(self, paging: PagingRegs, linear: int, access: MemoryAccess, user: bool,
                   translator: Translator | None = None) -> Fill:
        if paging.efer & EFER_LMA and not canonical(linear):
            raise NonCanonicalAddress(linear)
        return (translator or self.translator).translate(paging, linear, access, user)

    def read_linear(self, linear: int, length: int, access: MemoryAccess = MemoryAccess.READ,
                    user: bool = False) -> bytes:
        chunks = []
        for address, size in _page_pieces(linear, length):
            chunks.append(self.memory.read(self.translate(address, access, user), size))
        return b"".join(chunks)

    def write_linear(self, linear: int, data: bytes, user: bool = False) -> None:
        """Check every page first so a fault leaves memory untouched, then write."""
        pieces = [(self.translate(address, MemoryAccess.WRITE, user), size)
                  for address, size in _page_pieces(linear, len(data))]
        offset = 0
        for hpa, size in pieces:
            self.write_host(hpa, data[offset:offset + size])
            offset += size

    def write_host(self, hpa: int, data: bytes) -> None:
        """A VMM write into guest memory: translated code on that page must be dropped, and
        whoever shadows guest memory (shadow page tables) hears of it."""
        self.memory.write(hpa, data)
        self.host_memory_written(hpa, len(data))

    def host_memory_written(self, hpa: int, length: int) -> None:
        """Guest memory changed behind the TLB (the VMM for this vCPU, or a device): the
        observers hear of it, and code derived from it here or in another vCPU goes."""
        for observer in self.write_observers:
            observer(hpa, length)
        page = hpa & PAGE_MASK
        last = (hpa + length - 1) & PAGE_MASK
        for written in {page, last}:
            self.code_pages.written(self, written)
        if not (self.sites.is_code_page(page) or self.sites.is_code_page(last)):
            return
        self.sites.note_write(page)
        self.sites.note_write(last)
        self._drop_translations()

    def _drop_translations(self) -> None:
        if self._running:
            # Translated blocks cannot be dropped while one may be executing: leave first.
            self._deferred_flush = True
            self.request_stop()
        else:
            self.flush_translations()

    # --- the partition's shared code pages (code_pages.py) ------------------------------
    def join_code_pages(self, shared: SharedCodePages) -> None:
        self.code_pages = shared
        shared.join(self)

    def revoke_write(self, hpa_page: int) -> None:
        """Another vCPU now executes the page: writes here must fill the TLB again."""
        if hpa_page in self._writable:
            self.flush_tlb()

    def code_page_written(self, hpa_page: int) -> None:
        """Another vCPU (or a device) wrote a page this one executed: rescan and retranslate."""
        self.sites.note_write(hpa_page)
        self._drop_translations()

    def fetch(self, linear: int) -> bytes:
        """Up to 15 instruction bytes at a linear address (fewer at an unmapped page end)."""
        first = PAGE_SIZE - (linear & (PAGE_SIZE - 1))
        data = self.read_linear(linear, min(first, MAX_INSN_LENGTH), MemoryAccess.FETCH)
        if len(data) < MAX_INSN_LENGTH:
            try:
                data += self.read_linear(linear + len(data), MAX_INSN_LENGTH - len(data),
                                         MemoryAccess.FETCH)
            except TranslationFault:
                pass
        return data

    def code_version(self, rip: int) -> int:
        """Changes whenever the code page holding CS:rip is remapped or rewritten."""
        linear = (self.state().cs_base + rip) & 0xFFFFFFFFFFFFFFFF
        return self.sites.version(linear & PAGE_MASK)

    def bytes_before(self, rip: int, count: int) -> bytes:
        """The `count` instruction bytes that end at CS:rip (what software events just executed)."""
        linear = (self.segment(Seg.CS).base + rip - count) & 0xFFFFFFFFFFFFFFFF
        return self.read_linear(linear, count, MemoryAccess.FETCH)

    def decode_at(self, rip: int | None = None) -> Instruction | None:
        """Decode the instruction at CS:rip (default: the current RIP)."""
        rip = self.rip if rip is None else rip
        linear = (self.segment(Seg.CS).base + rip) & 0xFFFFFFFFFFFFFFFF
        insn = self.decoder.decode(self.fetch(linear), rip, self.code_mode())
        return insn

    # --- running -------------------------------------------------------------------------
    def run(self, budget: int | None = None) -> Stop:
        """Run until something leaves the guest; count instructions when budget is given."""
        self._before_run(budget is not None)
        self._stop = None
        self._fault = None
        self._emulated_in_hook = False
        self._stop_phase = _Phase.NONE
        self._debug_stop_at = None
        self._epoch += 1
        status = self.engine.start(self.rip, budget or 0)
        self._epoch += 1
        self._phase = _Phase.NONE
        stop = self._classify(status, budget)
        if self.counting:
            self.instructions_retired += stop.retired
            self.clock.retire(stop.retired)
        self._after_run()
        return stop

    def _before_run(self, counted: bool) -> None:
        if counted and not self.counting:
            # Blocks translated without the count hook never count, so they all go. While
            # counting, Unicorn walks every code hook at every instruction; sites of pages
            # no longer executed (the firmware's, say) would slow each one, so they go too
            # and only the pages that run again are rescanned.
            self.sites.replant(self.sites.kinds)
            self.flush_translations()
        if self._dead_hooks:
            self.flush_tlb()
            self._purge_dead_hooks()
        self.counting = counted
        self._running = True

    def _after_run(self) -> None:
        self._running = False
        if self._deferred_flush:
            self._deferred_flush = False
            self.flush_translations()

    def flush_translations(self) -> None:
        """Drop every translated block and TLB entry (after code or mapping changes)."""
        self.engine.uc.ctl_flush_tb()
        self.flush_tlb()

    def flush_tlb(self) -> None:
        self.engine.uc.ctl(unicorn.UC_CTL_TLB_FLUSH, unicorn.UC_CTL_IO_WRITE)
        self._writable.clear()

    def _clock_went_live(self) -> None:
        """Something just looked at guest time: from now on every instruction must count, and
        this slice is not counting, so end it at the next instruction boundary."""
        if self._running and not self.counting:
            self.request_stop()

    def _running_instructions(self) -> int:
        if self.counting and self._running:
            return self.engine.counted_instructions()
        return 0

    @property
    def retired_so_far(self) -> int:
        """Instructions retired up to the current one, including the slice under way (exact
        while counting). Inside a hook the count hook has already seen the current
        instruction, which has not retired."""
        running = self._running_instructions()
        if running and self._phase is not _Phase.NONE:
            running -= 1
        return self.instructions_retired + running

    @property
    def in_code_hook(self) -> bool:
        """True while a sensitive-instruction site is being handled, before the instruction runs."""
        return self._phase is _Phase.BEFORE

    @property
    def stop_requested(self) -> bool:
        return self._stop is not None

    def retire_emulated(self, count: int = 1) -> None:
        """Account for instructions completed (or, with a negative count, undone) by emulation.

        Inside a code hook the count hook already counted the instruction Unicorn was about
        to execute: if emulation completes it, a later stop must not subtract it again."""
        if self._running:
            if self._phase is _Phase.BEFORE and count > 0:
                self._emulated_in_hook = True
            return
        if self.counting:
            self.instructions_retired += count
            self.clock.retire(count)

    def request_stop(self) -> None:
        """Called from an event handler: leave emulation at the next instruction boundary."""
        if self._stop is None:
            self._stop = Stop(StopKind.REQUESTED, 0)
            self._stop_phase = self._phase
        self.engine.stop()

    def _classify(self, status: int, budget: int | None) -> Stop:
        counter = self.engine.counted_instructions() if self.counting else 0
        if self.engine.hook_error is not None:
            return Stop(StopKind.HOOK_ERROR, 0, error=self.engine.hook_error)
        if status == UC_ERR_EXCEPTION and self._fault is not None:
            fault, access = self._fault
            started = 0 if access is MemoryAccess.FETCH else 1
            return Stop(StopKind.TRANSLATION_FAULT, max(counter - started, 0), fault=fault,
                        fault_access=access, fault_address=self.engine.invalid_address())
        if status == UC_ERR_INSN_INVALID:
            return Stop(StopKind.INVALID_OPCODE, max(counter - 1, 0))
        if status != UC_ERR_OK:
            raise RuntimeError(f"Unicorn stopped with {unicorn.UcError(status)}")
        if self._stop is not None:
            return self._pending_stop(counter)
        if budget is not None and counter > budget:
            return Stop(StopKind.BUDGET, budget)
        return Stop(StopKind.HALT, counter)

    def _pending_stop(self, counter: int) -> Stop:
        stop = self._stop
        assert stop is not None
        if stop.kind is StopKind.EXCEPTION:
            retired = counter if stop.software else max(counter - 1, 0)
        elif self._stop_phase is _Phase.BEFORE and not self._emulated_in_hook:
            retired = max(counter - 1, 0)
        else:
            retired = counter
        return Stop(stop.kind, retired, stop.vector, stop.software, stop.error_code)

    # --- hooks ---------------------------------------------------------------------------
    def _on_in(self, port: int, size: int) -> int:
        self._epoch += 1
        self._phase = _Phase.DURING
        try:
            return self.events.port_in(port, size)
        finally:
            self._phase = _Phase.NONE

    def _on_out(self, port: int, size: int, value: int) -> None:
        self._epoch += 1
        self._phase = _Phase.DURING
        try:
            self.events.port_out(port, size, value)
        finally:
            self._phase = _Phase.NONE

    def _on_cpuid(self) -> int:
        self._epoch += 1
        self._phase = _Phase.DURING
        try:
            self.events.cpuid()
        finally:
            self._phase = _Phase.NONE
        return 1

    def _on_rdtsc(self, with_aux: bool) -> int:
        self._epoch += 1
        self._phase = _Phase.DURING
        try:
            self.events.rdtsc(with_aux)
        finally:
            self._phase = _Phase.NONE
        return 1

    def _plant_site(self, address: int) -> object:
        return self.engine.hook_code(self._on_site, address, address)

    def _remove_site(self, hook: object) -> None:
        hook.remove()  # type: ignore[attr-defined]
        if not self._running:
            self._dead_hooks = True

    def _purge_dead_hooks(self) -> None:
        """Unicorn unlinks deleted hooks only when an emu_start ends, and until then walks them
        at every hooked (in counted mode: every) instruction; 111 dead sites made counting
        50x slower. A run that stops at once, refusing the first instruction fetch (the TLB
        is empty after a flush), lets Unicorn unlink them without executing anything."""
        self._dead_hooks = False
        self._refuse_fills = True
        try:
            self.engine.start(self.rip)
        finally:
            self._refuse_fills = False

    def _on_site(self, address: int, _size: int) -> None:
        if address == self._debug_stop_at:
            return  # a debugger stops here first: the instruction must not be performed
        site = self.sites.site_at(address)
        if site is None:
            return
        self._epoch += 1
        self._emulated_in_hook = False   # an earlier site of this slice is not this instruction
        self._phase = _Phase.BEFORE
        try:
            self.events.sensitive_instruction(site)
        finally:
            self._phase = _Phase.NONE

    def _on_interrupt(self, vector: int) -> None:
        context = self.context.load()
        self._stop = Stop(StopKind.EXCEPTION, 0, vector=vector,
                          software=context.exception_is_software, error_code=context.error_code)
        self.engine.stop()

    def _on_invalid(self) -> bool:
        return False

    # --- a debugger's view of every instruction ------------------------------------------
    def set_debug_check(self, check: Callable[[int], bool] | None) -> None:
        """A debugger looks at every instruction before it executes (vtemu.debug): when
        `check(linear address)` says so, the vCPU stops there with the instruction unexecuted
        and not counted, and no site performs it. One whole-range code hook, installed once
        and kept (hooks only reach blocks translated after them, so translations go)."""
        self._debug_check = check
        if check is not None and self._debug_hook is None:
            self._debug_hook = self.engine.hook_code(self._on_debug_check, 1, 0)
            self.flush_translations()

    def _on_debug_check(self, address: int, _size: int) -> None:
        check = self._debug_check
        if check is None or self._stop is not None or not check(address):
            return
        self._debug_stop_at = address
        self.request_stop_before()

    def request_stop_before(self) -> None:
        """Stop with the instruction under way abandoned (a debugger's code hook before it, or
        a watchpoint's memory hook during it: Unicorn restarts it from its beginning), so it is
        not counted."""
        self._emulated_in_hook = False
        self._phase = _Phase.BEFORE
        try:
            self.request_stop()
        finally:
            self._phase = _Phase.NONE

    def begin_instruction(self) -> None:
        """Code that performs an instruction for the guest from inside a hook, before the
        instruction executes (a translated-code callout), as a site handler does; it ends
        with end_instruction (a plain pair, not a context manager: callouts are hot)."""
        self._epoch += 1
        self._phase = _Phase.BEFORE

    def end_instruction(self) -> None:
        self._phase = _Phase.NONE

    @staticmethod
    def _no_callout() -> None:
        raise RuntimeError("SYSCALL reached Unicorn's instruction hook: a guest SYSCALL is a "
                           "site (fastcall.py), so only a translation cache's callout may")

    def _on_tlb_fill(self, vpage: int, uc_access: int, entry: object) -> bool:
        if self._refuse_fills:
            return False
        self.tlb_fills += 1
        access = _UC_ACCESS[uc_access]
        context = self.context.load()
        user = context.cpl == 3 and not _implicit_supervisor(context, vpage)
        try:
            fill = self.overlay.fill(vpage, access, context) if self.overlay else None
            if fill is None:
                fill = self._translate(self.paging_regs(), vpage, access, user)
        except TranslationFault as fault:
            if self._fault is None:  # a spurious fill may follow the refused one (DESIGN.md)
                self._fault = (fault, access)
            return False
        entry.paddr = fill.hpa  # type: ignore[attr-defined]
        entry.perms = self._grant(vpage, fill, access)  # type: ignore[attr-defined]
        return True

    def _grant(self, vpage: int, fill: Fill, access: MemoryAccess) -> int:
        """Permissions for the TLB entry: never write and execute together on scanned code."""
        if fill.vmm:
            return ((PROT_R if fill.readable else 0) | (PROT_W if fill.writable else 0)
                    | (PROT_X if fill.executable else 0))
        observer = self.code_observer
        if observer is not None and access is not MemoryAccess.FETCH and observer.watches(fill.hpa):
            if access is MemoryAccess.WRITE:
                observer.written(fill.hpa)          # translated code is about to change
                return PROT_R | PROT_W
            return PROT_R                           # so that a write comes back here
        if access is MemoryAccess.FETCH:
            self.sites.fetched(vpage, fill.hpa, lambda: self._code_window(vpage, fill.hpa))
            self.code_pages.executing(self, fill.hpa)
            return PROT_R | PROT_X
        code_page = self.sites.is_code_page(fill.hpa) or self.code_pages.is_code(fill.hpa)
        if access is MemoryAccess.WRITE:
            if code_page:
                self.sites.note_write(fill.hpa)
                self.code_pages.written(self, fill.hpa)
            self._writable.add(fill.hpa)
            return PROT_R | PROT_W
        if fill.writable and fill.dirty and not code_page:
            self._writable.add(fill.hpa)
            return PROT_R | PROT_W
        return PROT_R

    def _code_window(self, vpage: int, hpa: int) -> tuple[bytes, int]:
        """The page's bytes plus up to 14 bytes of the next page, for page-crossing sites."""
        code = self.memory.read(hpa, PAGE_SIZE)
        try:
            next_hpa = self.translate(vpage + PAGE_SIZE, MemoryAccess.FETCH, False)
            code += self.memory.read(next_hpa, MAX_INSN_LENGTH - 1)
        except (TranslationFault, MemoryError):
            pass
        return code, PAGE_SIZE

    def set_site_kinds(self, kinds: frozenset[SiteKind]) -> None:
        if kinds != self.sites.kinds:
            self.sites.replant(kinds)
            self.flush_translations()


_UC_ACCESS = {UC_MEM_READ: MemoryAccess.READ, UC_MEM_WRITE: MemoryAccess.WRITE,
              UC_MEM_FETCH: MemoryAccess.FETCH}


class _NoEvents:
    """Until a VMX layer is attached, the bare silicon behaves like Unicorn would."""

    def port_in(self, port: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def port_out(self, port: int, size: int, value: int) -> None:
        return None

    def cpuid(self) -> None:
        return None

    def rdtsc(self, with_aux: bool) -> None:
        return None

    def sensitive_instruction(self, site: Site) -> None:
        return None


def _real_mode_engine() -> unicorn.Uc:
    """A 64-bit engine holding a real-mode CPU (DESIGN.md: register access follows the engine mode)."""
    real = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_16)
    engine = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    engine.context_restore(real.context_save())
    return engine


def _implicit_supervisor(context: CpuContext, linear: int) -> bool:
    """SDM Vol. 3A 4.6: descriptor-table and TSS accesses are supervisor accesses even at CPL 3."""
    for name in ("gdt", "idt", "ldt", "tr"):
        table = context.table(name)
        if table.base & PAGE_MASK <= linear <= (table.base + table.limit) & 0xFFFFFFFFFFFFFFFF:
            return True
    return False


def _page_pieces(linear: int, length: int) -> list[tuple[int, int]]:
    pieces = []
    while length > 0:
        size = min(length, PAGE_SIZE - (linear & (PAGE_SIZE - 1)))
        pieces.append((linear, size))
        linear, length = linear + size, length - size
    return pieces

