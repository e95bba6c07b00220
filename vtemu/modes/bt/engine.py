"""The binary-translation engine: guest kernel code runs only from the translation cache.

Per vCPU. While the guest runs at CPL 0 in protected or long mode with a flat code segment,
its instructions execute from TC translations (emit.py) and never from guest pages: an
instruction fetch at CPL 0 from anywhere but the TC is refused (the Overlay) and brings the
vCPU back here, which is also how IRET, far returns and SYSRET/SYSEXIT leave translated code.
User code (CPL 3) and real-mode or 16-bit code run directly, under the VT-x machine.

Around each slice the engine does what the hardware boundary would: `before_run` points RIP
at the translation of the guest's RIP (translating on demand), `after_run` turns the TC
address the vCPU stopped at back into the guest's RIP with the guest's exact state (rolling
a replacement sequence forward when a stop landed inside one). In between, the translated
code calls out through SYSCALL (a cheap Unicorn instruction hook): for sensitive
instructions, which the hypervisor serves with the same routines its VM exits use, but as
callouts (no VMX transition, nothing in the VMCS); for branches to code not yet translated
(exit stubs, then chained); and for indirect-branch lookup misses.

Superblock formation: a target reached through an exit stub HOT times gets a superblock:
from its block, the path follows the successor each branch took most often so far (profile
counts from the stubs), across direct jumps, calls and conditional branches, until it meets
itself (a loop), an indirect branch or an instruction that leaves the TC, MAX_BLOCKS blocks
or MAX_INSTRUCTIONS instructions. The branch that brought us is then chained to it.

Interrupt flag: the TC runs at CPL 0, and on this machine the hypervisor, not the CPU,
delivers interrupts, consulting RFLAGS.IF between slices; so the real IF is the guest's
virtual IF, and CLI/STI/PUSHF/POPF run as they are (deprivileged mode shows why a ring-1 TC
must rewrite them). CR8 and the reads of CR0/CR4 are emulated inline on the data page.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import capstone.x86_const as C
import unicorn.x86_const as U

from vtemu.machine import layout
from vtemu.machine.cpustate import HF_CS32, HF_CS64, HF_PE
from vtemu.machine.decode import CodeMode
from vtemu.machine.memory import HostRegion
from vtemu.machine.sites import SiteKind
from vtemu.machine.translation import (Fill, GuestPageFault, KernelCodeFetch, MemoryAccess,
                                       TranslationFault)
from vtemu.machine.vcpu import GuestException, Stop, StopKind
from vtemu.modes.bt import region
from vtemu.modes.bt.cache import TranslationCache
from vtemu.modes.bt.decode import BlockReader, Shape
from vtemu.modes.bt.emit import Callout, Emitter, Fragment, Untranslatable
from vtemu.vmx import instructions
from vtemu.vmx.reasons import ExitReason
from vtemu.vmx.transitions import store_lma

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu

HOT = 4                  # exit-stub executions before a target gets a superblock and a chain
MAX_BLOCKS = 16
MAX_INSTRUCTIONS = 256
ROLL_FORWARD_LIMIT = 64
SELF_CHECK_AFTER = 4     # invalidations of a page before its code is translated self-checking
CR0_PE, CR0_TS = 1, 1 << 3
HF_VM = 1 << 17       # QEMU hflags: virtual-8086 mode
GP = 13
PF = 14
# Callouts after which the CPU mode or the address space may differ: stop and look again.
_RESHAPING = {SiteKind.MOV_CR, SiteKind.CLTS, SiteKind.LMSW, SiteKind.WRMSR, SiteKind.INVLPG,
              SiteKind.VMX, SiteKind.DESCRIPTOR_TABLE, SiteKind.LDTR_TR}


class TcMiss(KernelCodeFetch):
    """Kernel code fetched from outside the TC (after IRET, a far return...): translate it."""

    def __init__(self, linear: int) -> None:
        super().__init__(linear, "untranslated kernel code")


@dataclass
class BtCounters:
    instructions_translated: int = 0
    blocks: int = 0
    superblocks: int = 0
    superblock_instructions: int = 0
    tc_bytes: int = 0
    chained: int = 0
    lookup_hits: int = 0            # indirect branches the inline table resolved (read from
    lookup_misses: int = 0          # the data page, where the lookup stub counts them)
    callouts: Counter = field(default_factory=Counter)
    invalidations: int = 0
    self_checked_pages: int = 0     # pages whose translations check their code bytes instead
    self_check_failures: int = 0    # of being write-protected (and how often a check failed)
    flushes: int = 0
    tc_misses: int = 0
    roll_forwards: int = 0

    @property
    def mean_superblock_length(self) -> float:
        return self.superblock_instructions / self.superblocks if self.superblocks else 0.0

    def as_dict(self) -> dict[str, object]:
        values = {k: v for k, v in vars(self).items() if k != "callouts"}
        values["callouts"] = dict(self.callouts)
        values["mean_superblock_length"] = round(self.mean_superblock_length, 1)
        return values


class BtEngine:
    counter_section = "translation"        # the --stats line its counters go to

    def __init__(self, cpu: "VmxCpu", partition: "Partition") -> None:
        self.cpu = cpu
        self.vcpu = cpu.vcpu
        self.partition = partition
        self.counters = BtCounters()
        self.reader = BlockReader(self.vcpu.decoder, self.vcpu.fetch)
        self._caches: dict[CodeMode, TranslationCache] = {}
        self._edges: Counter[tuple[int, int]] = Counter()     # (branch, target) -> times taken
        self._stub_runs: Counter[int] = Counter()
        self.armed = False
        self.mode: CodeMode | None = None
        self._flush_pending = False
        self._recheck = False
        self._unlinked: list = []          # retired fragments whose Unicorn blocks must go
        self._page_writes: Counter[int] = Counter()
        self._self_checked: set[int] = set()   # host pages translated with self-checks
        self._last_cpl = 0
        self.vcpu.overlay = self
        self.vcpu.callout = self._on_callout
        self.vcpu.code_observer = self
        self.vcpu.write_observers.append(self._vmm_wrote)
        cpu.mode_engine = self

    # --- the caches ---------------------------------------------------------------------------
    def cache(self, mode: CodeMode) -> TranslationCache:
        cache = self._caches.get(mode)
        if cache is None:
            hpa = layout.bt_window_hpa(self.partition.index, self.vcpu.index, mode is CodeMode.BITS64)
            window = self.partition.host.add(HostRegion(
                f"partition {self.partition.index} vCPU {self.vcpu.index} BT {int(mode)}-bit",
                hpa, region.WINDOW_SIZE))
            self.partition.host.map_into(self.vcpu.engine.uc, [window])
            cache = self._caches[mode] = TranslationCache(mode, self.partition.host, window)
        return cache

    # --- ModeEngine ---------------------------------------------------------------------------
    def takes_exits(self) -> bool:
        """Exits of kernel code running from the TC are callouts, not VM exits."""
        return self.armed and self.vcpu.state().cpl == 0

    def before_run(self) -> bool:
        self._drop_stale_blocks()
        if self._flush_pending:
            self._flush()
        mode = self._kernel_mode()
        if mode is None:
            self._disarm()
            return True
        if not self.armed or mode is not self.mode or self._last_cpl != 0:
            self.vcpu.flush_tlb()       # no entry filled for direct execution may survive
        self.armed, self.mode, self._last_cpl = True, mode, 0
        rip = self.vcpu.rip
        if region.in_window(rip, mode):
            return True
        try:
            tc = self._resume_point(self.cache(mode), rip)
        except GuestPageFault as fault:
            self.cpu.raise_exception(PF, fault.error_code, cr2=fault.linear, rip=rip)
            return False
        self._publish(self.cache(mode))
        self.vcpu.rip = tc
        return True

    def after_run(self, stop: Stop) -> Stop:
        if stop.kind is StopKind.TRANSLATION_FAULT and isinstance(stop.fault, TcMiss):
            self.counters.tc_misses += 1           # RIP is already the guest target
            stop = Stop(StopKind.REQUESTED, stop.retired)
        if not self.armed:
            return stop
        assert self.mode is not None
        cache = self.cache(self.mode)
        rip = self.vcpu.rip
        if region.in_window(rip, self.mode):
            rip = self._precise(cache, stop)
            self.vcpu.rip = rip
            self.vcpu.tpr = cache.read_data(region.VTPR) & 0xF
        self._last_cpl = self.vcpu.state().cpl
        # Callouts are the hypervisor's own boundary, not VM exits: keep the entry control
        # that a VM exit would have updated in step with the mode the guest switched to.
        store_lma(self.cpu)
        if self._recheck:
            self._recheck = False
            self._check_address_space(cache)
        return stop

    def _resume_point(self, cache: TranslationCache, rip: int) -> int:
        """Where translated code resumes after a stop at guest `rip`. A self-checking
        fragment is entered past its check, which is done here instead: a stop between its
        check and its first instruction maps back to `rip`, and redoing the check on every
        resume would never get further than that (one-instruction steps, for one)."""
        tc = self.lookup(rip)
        fragment = cache.fragment_at(tc)
        if fragment.checked is None:
            return tc
        if self.vcpu.read_linear(rip, len(fragment.checked)) == fragment.checked:
            return fragment.body
        self.counters.self_check_failures += 1
        self._unlinked.append(cache.retire_at(tc))
        return self._resume_point(cache, rip)

    def _precise(self, cache: TranslationCache, stop: Stop) -> int:
        """The guest RIP of the TC address the vCPU stopped at, rolling forward out of a
        replacement sequence (such stops are budget ends or requests, never faults)."""
        for _ in range(ROLL_FORWARD_LIMIT):
            tc = self.vcpu.rip
            if not region.in_window(tc, self.mode):  # type: ignore[arg-type]
                return tc
            known, guest = cache.precise(tc)
            if guest is not None:
                return guest
            if not known and stop.kind not in (StopKind.BUDGET, StopKind.REQUESTED):
                raise RuntimeError(f"stop ({stop.kind.value}) at {tc:#x}, inside a TC instruction")
            self.counters.roll_forwards += 1
            self.vcpu.run(1)
        raise RuntimeError(f"could not roll forward out of the TC sequence at {self.vcpu.rip:#x}")

    def _kernel_mode(self) -> CodeMode | None:
        return kernel_mode(self.vcpu.state())

    def _disarm(self) -> None:
        if self.armed:
            self.vcpu.flush_tlb()
        self.armed = False
        self._last_cpl = self.vcpu.state().cpl if self.vcpu.read(U.UC_X86_REG_CR0) & CR0_PE else 0

    # --- Overlay ------------------------------------------------------------------------------
    def fill(self, linear: int, access: MemoryAccess, context) -> Fill | None:
        cpl = context.cpl
        if not self.armed or self.mode is None:
            if access is MemoryAccess.FETCH and kernel_mode(context) is not None:
                raise TcMiss(linear)      # the guest just entered code the TC must run
            return None
        if region.in_window(linear, self.mode):
            if cpl == 3:
                raise GuestPageFault(linear, 0x1 | (2 if access is MemoryAccess.WRITE else 0) | 4)
            cache = self.cache(self.mode)
            offset = linear - cache.base
            code = offset >= region.CODE
            return Fill(cache.hpa(linear), readable=True, writable=not code, executable=code, vmm=True)
        if access is MemoryAccess.FETCH and cpl == 0:
            raise TcMiss(linear)
        return None

    # --- CodeObserver: guest pages translated code came from ---------------------------------
    def watches(self, hpa_page: int) -> bool:
        return any(hpa_page in cache.guest_pages for cache in self._caches.values())

    def written(self, hpa_page: int) -> None:
        """The guest (or the VMM) is writing a page the TC translated code from: retire those
        translations at once (their entries become stale callouts), without stopping the
        vCPU -- a stop requested inside the write's TLB fill would re-execute the write. The
        write takes effect for the guest's code at the next branch into it."""
        self.counters.invalidations += 1
        self._page_writes[hpa_page] += 1
        if self._page_writes[hpa_page] >= SELF_CHECK_AFTER and hpa_page not in self._self_checked:
            self._self_checked.add(hpa_page)          # data shares the page with code
            self.counters.self_checked_pages = len(self._self_checked)
        for cache in self._caches.values():
            self._unlinked.extend(cache.poison(hpa_page))

    def _drop_stale_blocks(self) -> None:
        """Unicorn's translations of retired fragments go (never from inside a TLB fill)."""
        for fragment in self._unlinked:
            self.vcpu.engine.uc.ctl_remove_cache(fragment.tc_entry, fragment.tc_end)
        self._unlinked.clear()

    def _vmm_wrote(self, hpa: int, length: int) -> None:
        for page in range(hpa & ~0xFFF, hpa + length, 0x1000):
            if self.watches(page):
                self.written(page)

    def _flush(self) -> None:
        self._flush_pending = False
        self.counters.flushes += 1
        for cache in self._caches.values():
            cache.flush()
        self._edges.clear()
        self._stub_runs.clear()
        self.vcpu.flush_translations()

    def _check_address_space(self, cache: TranslationCache) -> None:
        """After a CR3 load or INVLPG: translations made from pages the guest now maps
        elsewhere (or not at all) must go."""
        for linear, hpa in list(cache.linear_pages.items()):
            try:
                current = self.vcpu.translate(linear, MemoryAccess.FETCH)
            except TranslationFault:
                current = None
            if current != hpa:
                self.written(hpa)

    # --- translation --------------------------------------------------------------------------
    def lookup(self, guest: int) -> int:
        """The TC address of `guest`'s translation, translating a block if there is none."""
        assert self.mode is not None
        cache = self.cache(self.mode)
        tc = cache.entries.get(guest)
        if tc is None:
            tc = self._translate([guest], cache, superblock=False)
        return tc

    def _translate(self, path: list[int], cache: TranslationCache, superblock: bool) -> int:
        """Emit the blocks starting at the addresses in `path` as one fragment and install it."""
        assert self.mode is not None
        if not cache.has_room(64 * 1024):
            self._flush_pending = True            # full: start over at the next stop
            self.vcpu.request_stop()
        emitter = Emitter(self.mode, cache.next_free, path[0], cache.dispatch)
        blocks = self._path_blocks(path) if superblock else [self.reader.block(path[0], self.mode)]
        checked = not superblock and self._checks_itself(blocks[0])
        if checked:
            emitter.self_check(path[0], b"".join(gi.insn.raw for gi in blocks[0] if gi is not None))
        for index, block in enumerate(blocks):
            self._emit_block(emitter, block, blocks[index + 1][0] if index + 1 < len(blocks) else None)
        fragment = emitter.finish()
        if not checked:
            self._note_pages(fragment, blocks, cache)
        cache.install(fragment)
        self.counters.instructions_translated += fragment.instructions
        self.counters.tc_bytes = cache.code_bytes
        if superblock:
            cache.superblock_heads.add(path[0])
            self.counters.superblocks += 1
            self.counters.superblock_instructions += fragment.instructions
        else:
            self.counters.blocks += 1
        return fragment.tc_entry

    def _checks_itself(self, block: list) -> bool:
        """Whether the block lies on a page the guest keeps writing (and its bytes are all
        addressable by a sign-extended disp32): then its translation checks its bytes."""
        if not self._self_checked or block[0] is None or any(gi is None for gi in block):
            return False
        start, end = block[0].address, block[-1].next_address
        if self.mode is CodeMode.BITS64 and not (end < 2**31 or start >= 2**64 - 2**31):
            return False
        return bool(self._pages_of(start, end) & self._self_checked)

    def _pages_of(self, start: int, end: int) -> set[int]:
        pages = set()
        for linear in {start & ~0xFFF, (end - 1) & ~0xFFF}:
            try:
                pages.add(self.vcpu.translate(linear, MemoryAccess.FETCH) & ~0xFFF)
            except TranslationFault:
                pass
        return pages

    def _emit_block(self, emitter: Emitter, block: list, following) -> None:
        """One basic block; `following` is the next block of the superblock, laid out next."""
        next_guest = following.address if following is not None else None
        address = block[0].address if block[0] is not None else None
        for gi in block:
            if gi is None:
                emitter.instruction(None, address)
                return
            address = gi.next_address
            last = gi is block[-1]
            if last and next_guest is not None and gi.shape in (Shape.JMP, Shape.CALL, Shape.JCC):
                emitter.instruction(gi, gi.address, inline=next_guest)
                return
            emitter.instruction(gi, gi.address)
        tail = block[-1]
        if tail.shape not in _ENDS_WITH_TRANSFER and tail.next_address != next_guest:
            emitter.fall_through(tail.next_address, tail.address)

    def _path_blocks(self, path: list[int]) -> list[list]:
        return [self.reader.block(address, self.mode) for address in path]  # type: ignore[arg-type]

    def _note_pages(self, fragment: Fragment, blocks: list[list], cache: TranslationCache) -> None:
        """Watch the guest pages the fragment was translated from (self-modifying code)."""
        new = False
        for block in blocks:
            for gi in block:
                if gi is None:
                    continue
                for linear in {gi.address & ~0xFFF, (gi.next_address - 1) & ~0xFFF}:
                    hpa = self.vcpu.translate(linear, MemoryAccess.FETCH) & ~0xFFF
                    if hpa not in cache.guest_pages:
                        new = True
                    fragment.guest_pages.add(hpa)
                    cache.linear_pages[linear] = hpa
        if new:
            self.vcpu.flush_tlb()       # entries that could write those pages go

    def _superblock_path(self, head: int) -> list[int]:
        """Block entries along the path the profile says is hot (see the module docstring)."""
        assert self.mode is not None
        path = [head]
        instructions = 0
        while len(path) < MAX_BLOCKS:
            try:
                block = self.reader.block(path[-1], self.mode)
            except TranslationFault:
                break
            instructions += len(block)
            last = block[-1]
            if last is None or instructions >= MAX_INSTRUCTIONS:
                break
            successor = self._hot_successor(last)
            if successor is None or successor in path or self._on_self_checked_page(successor):
                break
            path.append(successor)
        return path

    def _on_self_checked_page(self, guest: int) -> bool:
        return bool(self._self_checked) and bool(self._pages_of(guest, guest + 1) & self._self_checked)

    def _hot_successor(self, last) -> int | None:
        if last.shape in (Shape.JMP, Shape.CALL):
            return last.target
        if last.shape is Shape.JCC:
            taken = self._edges[(last.address, last.target)]
            fall = self._edges[(last.address, last.next_address)]
            return last.target if taken > fall else last.next_address
        if last.shape not in _ENDS_WITH_TRANSFER:
            return last.next_address
        return None

    def _publish(self, cache: TranslationCache) -> None:
        """What the inline sequences read: the virtual TPR and the CR0/CR4 the guest sees."""
        cache.write_data(region.VTPR, self.vcpu.tpr)
        intercepts = self.cpu.intercepts
        cache.write_data(region.GUEST_CR0, intercepts.shadowed(0, self.vcpu.read(U.UC_X86_REG_CR0)))
        cache.write_data(region.GUEST_CR4, intercepts.shadowed(4, self.vcpu.read(U.UC_X86_REG_CR4)))

    # --- callouts -----------------------------------------------------------------------------
    def _on_callout(self) -> None:
        """SYSCALL in the TC. Whatever happens, RIP must end 2 bytes before where execution
        goes on (Unicorn adds the SYSCALL's length after the hook)."""
        assert self.mode is not None
        self._drop_stale_blocks()
        cache = self.cache(self.mode)
        tc = self.vcpu.rip
        callout = cache.callouts.get(tc)
        if callout is None:
            raise RuntimeError(f"SYSCALL at {tc:#x} is no callout of the TC")
        self.counters.callouts[callout.kind] += 1
        if callout.kind == "check":                  # the guest changed the block's bytes
            self.counters.self_check_failures += 1
            self._unlinked.append(cache.retire_at(tc))
        if callout.kind in _BRANCHES:
            self._branch_callout(cache, tc, callout)
        elif callout.kind == "gp":
            self._fault(callout, GP, 0)
        else:
            self._service(cache, callout)

    def _branch_callout(self, cache: TranslationCache, tc: int, callout: Callout) -> None:
        """Control reaches guest code without a usable translation. Fetching it to translate
        it may fault (not present, NX): the guest then takes the #PF at the branch target,
        with the branch itself complete, as the processor's fetch would report it."""
        try:
            if callout.kind == "exit":
                destination = self._exit(cache, tc, callout)
            elif callout.kind == "dispatch":
                destination = self._dispatch_miss(cache)
            else:
                destination = self.lookup(callout.target)
        except GuestPageFault as fault:
            self.vcpu.rip = fault.linear
            self.cpu.raise_exception(PF, fault.error_code, cr2=fault.linear, rip=fault.linear)
            destination = fault.linear
        self._continue_at(destination)

    def _continue_at(self, address: int) -> None:
        self.vcpu.write(U.UC_X86_REG_RIP, (address - 2) & 0xFFFF_FFFF_FFFF_FFFF)

    def _exit(self, cache: TranslationCache, tc: int, callout: Callout) -> int:
        """A branch left its fragment for code without a translation (or not chained yet)."""
        target = callout.target
        self._stub_runs[tc] += 1
        if callout.source is not None:
            self._edges[(callout.source, target)] += 1
        if self._stub_runs[tc] < HOT or callout.branch_field is None:
            return self.lookup(target)
        destination = cache.entries.get(target)
        if self._on_self_checked_page(target):
            destination = self.lookup(target)    # one self-checking block, chained as it is
        elif destination is None or target not in cache.superblock_heads:
            destination = self._translate(self._superblock_path(target), cache, superblock=True)
        cache.patch_rel32(callout.branch_field, destination)
        self.vcpu.engine.uc.ctl_remove_cache(callout.branch_field, callout.branch_field + 4)
        self.counters.chained += 1
        return destination


    def _dispatch_miss(self, cache: TranslationCache) -> int:
        width = 0xFFFF_FFFF_FFFF_FFFF if self.mode is CodeMode.BITS64 else 0xFFFF_FFFF
        target = cache.read_data(region.TARGET) & width
        self.counters.lookup_misses += 1
        tc = self.lookup(target)
        cache.remember(target, tc)
        return tc

    def _fault(self, callout: Callout, vector: int, error_code: int | None) -> None:
        assert callout.instruction is not None
        guest = callout.instruction.address
        self.vcpu.rip = guest
        self.cpu.raise_exception(vector, error_code, rip=guest)
        self._continue_at(guest)           # the stop the exception requested leaves RIP there

    def _service(self, cache: TranslationCache, callout: Callout) -> None:
        """A sensitive instruction: the processor's logic and the hypervisor's routine, with
        the guest's RIP in place while they run."""
        gi = callout.instruction
        assert gi is not None
        guest = gi.address
        self.vcpu.tpr = cache.read_data(region.VTPR) & 0xF   # MOV CR8 in the TC wrote it there
        before = self._shape_registers() if gi.kind in _RESHAPING or callout.kind == "hlt" else None
        self.vcpu.rip = guest
        self.vcpu.begin_instruction()
        try:
            if callout.kind == "hlt":
                self.cpu.exit_instruction(ExitReason.HLT, gi.insn, detail="hlt")
            else:
                instructions.handle(self.cpu, gi.kind, gi.insn)  # type: ignore[arg-type]
                if gi.kind in _EMULATED_WHEN_NATIVE and self.vcpu.rip == guest:
                    _emulate_native(self.cpu, gi)
        except GuestException as fault:
            self.cpu.raise_exception(fault.vector, fault.error_code, rip=guest)
        finally:
            self.vcpu.end_instruction()
        after = self.vcpu.rip
        performed = after != guest or self.vcpu.stop_requested
        if before is not None and performed and (
                gi.kind in _FLUSHES_TLB or before != self._shape_registers()):
            self._recheck = True
            self.vcpu.request_stop()
        if before is not None:                 # only these can change CR0, CR4 or the TPR
            self._publish(cache)
        if self.vcpu.stop_requested:
            self._continue_at(after)
        elif after == guest:
            self._continue_at(callout.native)
        elif after == gi.next_address:
            self._continue_at(callout.resume)
        else:
            self._continue_at(self.lookup(after))

    def _shape_registers(self) -> tuple[int, ...]:
        read = self.vcpu.read
        return (read(U.UC_X86_REG_CR0), read(U.UC_X86_REG_CR3), read(U.UC_X86_REG_CR4),
                self.vcpu.read_msr(0xC0000080), self.vcpu.state().cs_base)

    def counter_values(self) -> dict[str, object]:
        self.counters.lookup_hits = sum(cache.read_data(region.LOOKUP_HITS) & 0xFFFF_FFFF
                                        for cache in self._caches.values())
        return self.counters.as_dict()


def kernel_mode(state) -> CodeMode | None:
    """The code mode when the guest runs kernel code the TC can run (CPL 0, protected or long
    mode, a flat code segment), else None (real mode, virtual-8086 mode, 16-bit or segmented
    code, user code: those run directly)."""
    hflags = state.hflags
    if state.cpl != 0 or not hflags & HF_PE or hflags & HF_VM:
        return None
    if hflags & HF_CS64:
        return CodeMode.BITS64
    if hflags & HF_CS32 and state.cs_base == 0:
        return CodeMode.BITS32
    return None


# Block ends after which execution never falls through to the next instruction in the TC
# (a Jcc and HLT do; LOOP emits its own fall-through jump).
_ENDS_WITH_TRANSFER = {Shape.JMP, Shape.LOOP, Shape.CALL, Shape.RET, Shape.JMP_INDIRECT,
                       Shape.CALL_INDIRECT, Shape.LEAVES, Shape.TRAP, Shape.INTERPRET}
# Callouts after which translations must be checked against the guest's page tables even
# when no register changed (INVLPG; MOV to CR3 with the same value flushes the TLB too).
_FLUSHES_TLB = {SiteKind.INVLPG, SiteKind.MOV_CR}
_BRANCHES = {"exit", "dispatch", "stale", "check"}
_EMULATED_WHEN_NATIVE = {SiteKind.MOV_CR, SiteKind.CLTS, SiteKind.LMSW, SiteKind.INVLPG}


def _emulate_native(cpu: "VmxCpu", gi) -> None:
    """MOV to CR0/CR3/CR4, CLTS, LMSW and INVLPG that the controls let run natively are
    performed here, so the engine sees the new mode or mappings at once (MOV from a CR runs
    natively in the TC)."""
    insn, vcpu = gi.insn, cpu.vcpu
    cr0 = vcpu.read(U.UC_X86_REG_CR0)
    if insn.id == C.X86_INS_INVLPG:
        vcpu.flush_tlb()                      # a superset of dropping the one entry
    elif insn.id == C.X86_INS_CLTS:
        vcpu.write(U.UC_X86_REG_CR0, cr0 & ~CR0_TS)
    elif insn.id == C.X86_INS_LMSW:
        source = instructions._word_operand(cpu, insn)[0]
        # LMSW loads CR0 bits 3:0 but cannot clear PE (SDM Vol. 2 LMSW).
        vcpu.write(U.UC_X86_REG_CR0, (cr0 & ~0xE) | (source & 0xF) | (cr0 & CR0_PE))
    elif insn.registers and insn.registers[0] in _CONTROL:
        value = vcpu.read(insn.registers[1])
        vcpu.write(insn.registers[0], value if insn.mode is CodeMode.BITS64 else value & 0xFFFF_FFFF)
    else:
        return
    cpu.complete(insn)


_CONTROL = {U.UC_X86_REG_CR0, U.UC_X86_REG_CR2, U.UC_X86_REG_CR3, U.UC_X86_REG_CR4}
