"""`--paging shadow`: the hypervisor virtualizes memory with shadow page tables, without EPT.

While the guest pages (CR0.PG = 1) the VMCS has EPT off: CR3 holds the root of a shadow tree
(mmu/shadow.py) that maps guest-linear pages straight to host memory, and the processor walks
it (mmu/direct.py). The guest never sees it: CR0.PG/WP and CR4.PAE/PSE are host-owned (read
shadows show the guest's values), MOV to and from CR3 exit (CR3-load and CR3-store exiting),
INVLPG exits, and every #PF exits (exception bitmap bit 14, PFEC mask = match = 0). Each #PF
is then one of:

* a hidden fault: the guest's own tables map the page, the shadow just had no leaf yet. The
  hypervisor walks the guest's tables (setting their accessed/dirty flags as the processor
  would), installs the leaf and resumes; nothing reaches the guest.
* a true fault: the guest's tables refuse the access. The hypervisor injects #PF with the
  error code and CR2 the guest's walk gives (the processor does not write CR2 on a #PF exit).
* a write to one of the guest's page-table pages (mapped read-only in the shadow): the
  instruction is decoded with Capstone and emulated (MOV and XCHG stores), and the leaves
  derived from the entries written are dropped (mmu/shadow.py keeps the maps). Any other
  instruction (AND, OR, BTS, CMPXCHG, REP STOS...) is stepped for real on a writable leaf
  under the monitor trap flag, and the entries it changed are found by comparing the page.
* an access to MMIO or unbacked guest-physical memory: emulated as the EPT-violation path
  does (hv/mmio.py).

A leaf is writable only once the guest's PTE is dirty, so the first write to a clean page
faults and sets D. The real CR0.WP is always 1 so that write protection holds for the
guest kernel too; a guest running with WP = 0 gets supervisor-only writable leaves where its
tables say read-only (the classic trick), re-derived when user code touches the page.

While the guest has paging off there are no guest tables to shadow, and VT-x runs real mode
only as an "unrestricted guest", which requires EPT (SDM 26.2.1.1): in that phase the
hypervisor keeps EPT on as the guest-physical map and switches the controls at the CR0.PG
exits. The firmware's real-mode and unpaged protected-mode code runs that way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import capstone.x86_const as C
import unicorn.x86_const as U

from vtemu.hv.handlers import control_registers, events, msr
from vtemu.hv.handlers.common import GP, done, inject_exception, read_gpr, write_gpr
from vtemu.hv.mmio import EmulationError, emulate_access
from vtemu.hv.outcome import RESUME, Outcome, RunEnd, Shutdown
from vtemu.machine.addr import GPA, GVA, PAGE_MASK
from vtemu.machine.msrs import IA32_EFER
from vtemu.machine.translation import Fill, MemoryAccess, PagingRegs, SecondLevelFault
from vtemu.mmu.entries import load_entry, store_entry
from vtemu.mmu.paging import Access, PageFault, PFErr, walk
from vtemu.mmu.shadow import RootKey, ShadowMmu
from vtemu.vmx.controls import EntryControls
from vtemu.vmx.controls import PrimaryProcessorControls as P
from vtemu.vmx.controls import SecondaryProcessorControls as S
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.instructions import operand_linear
from vtemu.vmx.qualifications import CrAccessQualification, CrAccessType
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit

CR0_WP, CR0_PG = 1 << 16, 1 << 31
CR4_PSE, CR4_PAE = 1 << 4, 1 << 5
EFER_NXE, EFER_LMA = 1 << 11, 1 << 10
CR0_OWNED = CR0_PG | CR0_WP
CR4_OWNED = CR4_PAE | CR4_PSE
PAGE_FAULT = 14
EPT_PHASE = S.ENABLE_EPT | S.UNRESTRICTED_GUEST
SHADOW_EXITS = P.CR3_LOAD_EXITING | P.CR3_STORE_EXITING | P.INVLPG_EXITING
LINEAR_VALID = 1 << 7           # EPT-violation qualification bit, for tables in unbacked memory
_CR3_MASK = {True: 0x000F_FFFF_FFFF_F000, False: 0xFFFF_FFE0}


@dataclass
class ShadowCounters:
    hidden_faults: int = 0
    true_faults: int = 0
    table_writes: int = 0       # guest writes to its page-table pages, trapped
    table_writes_emulated: int = 0
    mmio_faults: int = 0
    invlpg_exits: int = 0
    guest_walks: int = 0
    guest_walk_references: int = 0


@dataclass
class _VcpuState:
    shadowing: bool = False     # the guest pages: EPT off, shadow tree in CR3
    guest_cr3: int = 0
    root: object = None
    stepping: tuple[int, int, bytes] | None = None   # (linear page, guest page, its bytes before)


class ShadowPaging:
    """Shadow paging for one partition: its shadow MMU, and the exits that keep it true."""

    name = "shadow"

    def __init__(self, partition: "Partition") -> None:
        self.partition = partition
        memory = partition.memory
        self.mmu = ShadowMmu(partition.host, memory.allocator, memory.low_allocator, self._flush_tlbs)
        self.counters = ShadowCounters()
        self._states: dict[int, _VcpuState] = {}
        self._tables = _GuestTables(self)
        self._base = {ExitReason.EXCEPTION_OR_NMI: events.handle_exception,
                      ExitReason.CR_ACCESS: control_registers.handle_cr_access,
                      ExitReason.WRMSR: msr.handle_wrmsr}

    # --- set-up ------------------------------------------------------------------------------
    def configure(self, cpu: "VmxCpu") -> None:
        """After the mode's VMCS: own the paging bits; the guest starts unpaged (EPT phase)."""
        vmcs = cpu.vmcs
        vmcs.write(F.CR0_GUEST_HOST_MASK, vmcs.read(F.CR0_GUEST_HOST_MASK) | CR0_OWNED)
        vmcs.write(F.CR0_READ_SHADOW, cpu.vcpu.read(U.UC_X86_REG_CR0) & vmcs.read(F.CR0_GUEST_HOST_MASK))
        vmcs.write(F.CR4_GUEST_HOST_MASK, vmcs.read(F.CR4_GUEST_HOST_MASK) | CR4_OWNED)
        vmcs.write(F.CR4_READ_SHADOW, cpu.vcpu.read(U.UC_X86_REG_CR4) & vmcs.read(F.CR4_GUEST_HOST_MASK))
        self._states[cpu.index] = _VcpuState()
        cpu.vcpu.write_observers.append(self._vmm_wrote)

    def handlers(self) -> dict:
        return {ExitReason.EXCEPTION_OR_NMI: self.handle_exception,
                ExitReason.CR_ACCESS: self.handle_cr_access,
                ExitReason.INVLPG: self.handle_invlpg,
                ExitReason.WRMSR: self.handle_wrmsr,
                ExitReason.MONITOR_TRAP_FLAG: self.handle_mtf}

    def counter_values(self) -> dict[str, int]:
        """The shadow MMU's work; `walk_references` adds the processor's walks of the shadow
        tables to the hypervisor's walks of the guest's."""
        values = dict(vars(self.counters))
        units = [direct for _, direct in self.partition.paging_units]
        values["walks"] = sum(unit.walks for unit in units) + self.counters.guest_walks
        values["walk_references"] = sum(unit.references for unit in units) + self.counters.guest_walk_references
        values.update({f"shadow_{name}": value for name, value in vars(self.mmu.counters).items()})
        values["shadow_pages_in_use"] = self.mmu.pages_in_use
        return values

    # --- the guest's view --------------------------------------------------------------------
    def guest_regs(self, cpu: "VmxCpu") -> PagingRegs:
        """CR0/CR4 as the guest set them (read shadows for owned bits), its own CR3, EFER."""
        vmcs, vcpu = cpu.vmcs, cpu.vcpu
        cr0 = _shadowed(vcpu.read(U.UC_X86_REG_CR0), vmcs.read(F.CR0_GUEST_HOST_MASK), vmcs.read(F.CR0_READ_SHADOW))
        cr4 = _shadowed(vcpu.read(U.UC_X86_REG_CR4), vmcs.read(F.CR4_GUEST_HOST_MASK), vmcs.read(F.CR4_READ_SHADOW))
        state = self._states[cpu.index]
        cr3 = state.guest_cr3 if state.shadowing else vcpu.read(U.UC_X86_REG_CR3)
        return PagingRegs(cr0, cr3, cr4, vcpu.read_msr(IA32_EFER))

    def guest_walk(self, cpu: "VmxCpu", linear: int, access: Access, set_accessed_dirty: bool = True):
        self.counters.guest_walks += 1
        return walk(self.guest_regs(cpu), GVA(linear), access, self._tables,
                    set_accessed_dirty=set_accessed_dirty)

    # --- exits -------------------------------------------------------------------------------
    def handle_exception(self, exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
        info = exit.interruption
        if info is None or info.vector != PAGE_FAULT or not self._states[cpu.index].shadowing:
            return self._base[ExitReason.EXCEPTION_OR_NMI](exit, cpu, partition)
        outcome = self._page_fault(exit, cpu)
        if exit.idt_vectoring is not None and not cpu.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) >> 31:
            # The fault interrupted an event's delivery; that event is still owed (SDM 27.2.4).
            cpu.inject(exit.idt_vectoring, exit.idt_vectoring_error, exit.instruction_length)
        return outcome

    def _page_fault(self, exit: "VmExit", cpu: "VmxCpu") -> Outcome:
        linear, error = exit.qualification, exit.interruption_error or 0
        access = Access(write=bool(error & PFErr.W), user=bool(error & PFErr.U),
                        fetch=bool(error & PFErr.ID))
        try:
            guest = self.guest_walk(cpu, linear, access)
        except PageFault as fault:
            self.counters.true_faults += 1
            cpu.vcpu.write(U.UC_X86_REG_CR2, linear)
            return inject_exception(cpu, PAGE_FAULT, fault.error_code)
        except SecondLevelFault as fault:
            return Shutdown(RunEnd.UNHANDLED_EXIT, f"guest page tables live in unbacked "
                                                   f"guest-physical memory at {fault.gpa:#x}", dump=True)
        gpa_page = guest.gpa & PAGE_MASK
        hpa_page = self.partition.memory.gpa_to_hpa(gpa_page, 4096)
        if hpa_page is None or (access.write and self.partition.memory.is_rom(gpa_page)):
            return self._device_access(exit, cpu, guest.gpa)
        if access.write and self.mmu.is_page_table(gpa_page):
            return self._table_write(exit, cpu, guest, hpa_page)
        self.counters.hidden_faults += 1
        self._install(cpu, linear, guest, access, hpa_page)
        return RESUME

    def _install(self, cpu: "VmxCpu", linear: int, guest, access: Access, hpa_page: int) -> None:
        gpa_page = guest.gpa & PAGE_MASK
        writable = guest.all_writable and guest.dirty and not self.partition.memory.is_rom(gpa_page)
        user = guest.user_page
        regs = self.guest_regs(cpu)
        if access.write and not access.user and not guest.all_writable and not regs.cr0 & CR0_WP:
            writable, user = True, False    # supervisor write with WP = 0: kernel-only writable leaf
        state = self._states[cpu.index]
        self.mmu.install(state.root, linear & PAGE_MASK, hpa_page, gpa_page, guest.entries, writable=writable, user=user, no_execute=guest.no_execute)

    def _device_access(self, exit: "VmExit", cpu: "VmxCpu", gpa: int) -> Outcome:
        self.counters.mmio_faults += 1
        if exit.interruption_error and exit.interruption_error & PFErr.ID:
            return Shutdown(RunEnd.UNHANDLED_EXIT,
                            f"guest executed from unbacked guest-physical memory at {gpa:#x}", dump=True)
        try:
            emulate_access(cpu, self.partition, exit._replace(guest_physical=gpa))
        except EmulationError as error:
            return Shutdown(RunEnd.UNHANDLED_EXIT, f"access to device memory at {gpa:#x}: {error}", dump=True)
        return RESUME

    def _table_write(self, exit: "VmExit", cpu: "VmxCpu", guest, hpa_page: int) -> Outcome:
        """The guest wrote one of its page-table pages: emulate the store (its effects on the
        shadow follow from the write itself); an instruction vtemu does not emulate runs for
        real on a writable leaf, one step under the monitor trap flag, and the entries it
        changed are found by comparing the page before and after (handle_mtf)."""
        self.counters.table_writes += 1
        if _emulate_store(cpu, exit.guest_rip):
            self.counters.table_writes_emulated += 1
            return RESUME
        gpa_page = guest.gpa & PAGE_MASK
        state = self._states[cpu.index]
        state.stepping = (exit.qualification & PAGE_MASK, gpa_page, self.partition.host.read(hpa_page, 4096))
        self.mmu.install(state.root, exit.qualification & PAGE_MASK, hpa_page, gpa_page, guest.entries,
                         writable=True, user=guest.user_page, no_execute=guest.no_execute, force=True)
        _set_control(cpu, F.CPU_BASED_VM_EXEC_CONTROL, P.MONITOR_TRAP_FLAG, on=True)
        return RESUME

    def handle_mtf(self, exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
        """The stepped write is done: drop what it changed, and protect the page again."""
        state = self._states[cpu.index]
        _set_control(cpu, F.CPU_BASED_VM_EXEC_CONTROL, P.MONITOR_TRAP_FLAG, on=False)
        if state.stepping is None:
            return Shutdown(RunEnd.UNHANDLED_EXIT, "unexpected monitor-trap-flag exit", dump=True)
        gva_page, gpa_page, before = state.stepping
        state.stepping = None
        hpa = partition.memory.gpa_to_hpa(gpa_page, 4096)
        after = partition.host.read(hpa, 4096)
        for offset in range(0, 4096, 8):
            if before[offset:offset + 8] != after[offset:offset + 8]:
                self.mmu.guest_memory_written(gpa_page + offset, 8)
        if state.shadowing:
            self.mmu.drop(state.root, gva_page)
        return RESUME

    def handle_cr_access(self, exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
        access = exit.decoded(CrAccessQualification)
        state = self._states[cpu.index]
        if access.cr == 3:
            if access.access_type is CrAccessType.MOV_FROM_CR:
                write_gpr(cpu, access.gpr, state.guest_cr3)
                return done(exit, cpu)
            return self._load_cr3(exit, cpu, access)
        before = self.guest_regs(cpu)
        outcome = self._base[ExitReason.CR_ACCESS](exit, cpu, partition)
        after = self.guest_regs(cpu)
        if (before.cr0, before.cr4) != (after.cr0, after.cr4):
            self._paging_changed(cpu, before, after)
        return outcome

    def _load_cr3(self, exit: "VmExit", cpu: "VmxCpu", access: CrAccessQualification) -> Outcome:
        value = read_gpr(cpu, access.gpr)
        long_mode = bool(cpu.vcpu.read_msr(IA32_EFER) & EFER_LMA)
        if long_mode and value >> 52:
            return inject_exception(cpu, GP, 0)   # reserved bits 63:52 (no PCID), SDM Vol. 2 MOV CR
        self._states[cpu.index].guest_cr3 = value
        self._activate(cpu)
        return done(exit, cpu)

    def handle_invlpg(self, exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
        self.counters.invlpg_exits += 1
        state = self._states[cpu.index]
        if state.shadowing:
            self.mmu.drop(state.root, exit.qualification & PAGE_MASK)
        return done(exit, cpu)

    # --- what paravirtual requests (hv/hypercalls) ask of the memory scheme ------------------
    def load_guest_cr3(self, cpu: "VmxCpu", value: int) -> bool:
        """MOV to CR3 on the guest's behalf (an address-space switch hypercall): the same
        work as the CR3-load exit; False if the value has reserved bits set."""
        if cr3_reserved_bits(cpu, value):
            return False
        state = self._states[cpu.index]
        if not state.shadowing:
            cpu.vcpu.write(U.UC_X86_REG_CR3, value)   # unpaged: CR3 is the guest's own
            cpu.vcpu.flush_tlb()
            return True
        state.guest_cr3 = value
        self._activate(cpu)
        return True

    def invalidate_page(self, cpu: "VmxCpu", linear: int, refill: Access | None = None) -> None:
        """INVLPG on the guest's behalf (a TLB-flush hypercall), without the exit. With
        `refill` the leaf is rebuilt at once from the guest's tables when they allow that
        access, so the guest's next access does not take a hidden fault. The walk sets the
        accessed flag (and for a write the dirty flag) as the processor's access would; a
        paravirtual guest asks for it just before that access."""
        state = self._states[cpu.index]
        if state.shadowing:
            self.mmu.drop(state.root, linear & PAGE_MASK)
            if refill is not None:
                self._refill(cpu, linear, refill)
        cpu.vcpu.flush_tlb()

    def _refill(self, cpu: "VmxCpu", linear: int, access: Access) -> None:
        try:
            guest = self.guest_walk(cpu, linear, access)
        except (PageFault, SecondLevelFault):
            return              # not allowed (or mapped strangely): the fault path decides later
        gpa_page = guest.gpa & PAGE_MASK
        hpa_page = self.partition.memory.gpa_to_hpa(gpa_page, 4096)
        if hpa_page is None or (access.write and (self.mmu.is_page_table(gpa_page)
                                                  or self.partition.memory.is_rom(gpa_page))):
            return              # device memory, or a write the fault path must see
        self._install(cpu, linear, guest, access, hpa_page)

    def flush_guest_tlb(self, cpu: "VmxCpu") -> None:
        """A whole-address-space flush: the shadow already follows every write to the
        guest's tables (they are write-protected), so as for a MOV to CR3 only the
        processor's TLB goes."""
        cpu.vcpu.flush_tlb()

    def guest_physical_map_changed(self) -> None:
        """A page changed its guest-physical rights (an overlay): re-derive every leaf."""
        self._reset_all()
        self._flush_tlbs()

    def handle_wrmsr(self, exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
        before = cpu.vcpu.read_msr(IA32_EFER)
        outcome = self._base[ExitReason.WRMSR](exit, cpu, partition)
        if (before ^ cpu.vcpu.read_msr(IA32_EFER)) & EFER_NXE and self._states[cpu.index].shadowing:
            self._reset_all()     # XD now means something else in every leaf
        return outcome

    # --- phases ------------------------------------------------------------------------------
    def _paging_changed(self, cpu: "VmxCpu", before: PagingRegs, after: PagingRegs) -> None:
        state = self._states[cpu.index]
        if after.cr0 & CR0_PG and not state.shadowing:
            state.guest_cr3 = cpu.vcpu.read(U.UC_X86_REG_CR3)
            self._set_phase(cpu, shadowing=True)
        elif not after.cr0 & CR0_PG and state.shadowing:
            self._set_phase(cpu, shadowing=False)
        elif state.shadowing:
            self._reset_all()     # WP, PAE or PSE changed what the guest's tables mean
        self._impose_real_bits(cpu)
        _sync_ia32e_entry(cpu)

    def _set_phase(self, cpu: "VmxCpu", shadowing: bool) -> None:
        vmcs, state = cpu.vmcs, self._states[cpu.index]
        state.shadowing = shadowing
        secondary = vmcs.read(F.SECONDARY_VM_EXEC_CONTROL)
        primary = vmcs.read(F.CPU_BASED_VM_EXEC_CONTROL)
        exceptions = vmcs.read(F.EXCEPTION_BITMAP)
        if shadowing:
            vmcs.write(F.SECONDARY_VM_EXEC_CONTROL, secondary & ~EPT_PHASE)
            vmcs.write(F.CPU_BASED_VM_EXEC_CONTROL, primary | SHADOW_EXITS)
            vmcs.write(F.EXCEPTION_BITMAP, exceptions | 1 << PAGE_FAULT)
            vmcs.write(F.PAGE_FAULT_ERROR_CODE_MASK, 0)
            vmcs.write(F.PAGE_FAULT_ERROR_CODE_MATCH, 0)
            cpu.vcpu.vmm_translator = GuestLinear(self, cpu)
            self._activate(cpu)
        else:
            self.mmu.deactivate(cpu.index)
            cpu.vcpu.write(U.UC_X86_REG_CR3, state.guest_cr3)
            vmcs.write(F.SECONDARY_VM_EXEC_CONTROL, secondary | EPT_PHASE)
            vmcs.write(F.CPU_BASED_VM_EXEC_CONTROL, primary & ~SHADOW_EXITS)
            vmcs.write(F.EXCEPTION_BITMAP, exceptions & ~(1 << PAGE_FAULT))
            cpu.vcpu.vmm_translator = None
            if not any(other.shadowing for other in self._states.values()):
                self.mmu.reset()  # unpaged, the guest may rewrite its tables unobserved

    def _activate(self, cpu: "VmxCpu") -> None:
        """Point CR3 at the shadow tree of the guest's current address space."""
        state = self._states[cpu.index]
        long_mode = bool(cpu.vcpu.read_msr(IA32_EFER) & EFER_LMA)
        key: RootKey = (state.guest_cr3 & _CR3_MASK[long_mode], long_mode)
        state.root = self.mmu.activate(key, cpu.index)
        cpu.vcpu.write(U.UC_X86_REG_CR3, state.root.table)  # type: ignore[attr-defined]

    def _impose_real_bits(self, cpu: "VmxCpu") -> None:
        """What the hardware registers must hold in each phase, whatever the guest wrote."""
        guest = self.guest_regs(cpu)
        state = self._states[cpu.index]
        cr0 = guest.cr0 | (CR0_WP if state.shadowing else 0)
        cr4 = guest.cr4 | (CR4_PAE if state.shadowing else 0)
        if cpu.vcpu.read(U.UC_X86_REG_CR4) != cr4:
            cpu.vcpu.write(U.UC_X86_REG_CR4, cr4)
        if cpu.vcpu.read(U.UC_X86_REG_CR0) != cr0:
            cpu.vcpu.write(U.UC_X86_REG_CR0, cr0)

    def _reset_all(self) -> None:
        self.mmu.reset()
        for cpu in self.partition.vcpus:
            if self._states[cpu.index].shadowing:
                self._activate(cpu)

    # --- coherence ---------------------------------------------------------------------------
    def _vmm_wrote(self, hpa: int, length: int) -> None:
        """The hypervisor (string I/O, an emulated store, delivery) wrote guest memory."""
        gpa = self.partition.memory.hpa_to_gpa(hpa)
        if gpa is not None:
            self.mmu.guest_memory_written(gpa, length)

    def _flush_tlbs(self) -> None:
        for cpu in self.partition.vcpus:
            cpu.vcpu.flush_tlb()


class _GuestTables:
    """EntryMemory for walks of the guest's own tables: guest-physical through the P2M map."""

    def __init__(self, shadow: ShadowPaging) -> None:
        self._shadow = shadow
        self._memory = shadow.partition.memory
        self._host = shadow.partition.host

    def _hpa(self, gpa: GPA) -> int:
        hpa = self._memory.gpa_to_hpa(gpa & PAGE_MASK, 4096)
        if hpa is None:
            raise SecondLevelFault(gpa, LINEAR_VALID)
        return hpa | (gpa & 0xFFF)

    def read_entry(self, gpa: GPA, size: int) -> int:
        self._shadow.counters.guest_walk_references += 1
        return load_entry(self._host, self._hpa(gpa), size)

    def write_entry(self, gpa: GPA, size: int, value: int) -> None:
        store_entry(self._host, self._hpa(gpa), size, value)


class GuestLinear:
    """The hypervisor's Translator for guest-linear memory it reads and writes itself
    (instruction fetch for decoding, event delivery, string I/O): the guest's own tables."""

    _ACCESS = {(access, user): Access(write=access is MemoryAccess.WRITE, user=user,
                                      fetch=access is MemoryAccess.FETCH)
               for access in MemoryAccess for user in (False, True)}

    def __init__(self, shadow: ShadowPaging, cpu: "VmxCpu") -> None:
        self._shadow = shadow
        self._cpu = cpu

    def translate(self, paging: PagingRegs, linear: int, access: MemoryAccess, user: bool) -> Fill:
        guest = self._shadow.guest_walk(self._cpu, linear, self._ACCESS[access, user])
        hpa = self._shadow.partition.memory.gpa_to_hpa(guest.gpa & PAGE_MASK, 4096)
        if hpa is None:
            raise SecondLevelFault(guest.gpa, LINEAR_VALID | (1 << 8), linear)
        return Fill(hpa, guest.readable, guest.writable, guest.executable, dirty=guest.dirty)


def _emulate_store(cpu: "VmxCpu", rip: int) -> bool:
    """MOV and XCHG to memory, performed for the guest; False for anything else."""
    insn = cpu.vcpu.decode_at(rip)
    if insn is None or insn.memory is None:
        return False
    size = insn.memory.size
    mask = (1 << (8 * size)) - 1
    if insn.id == C.X86_INS_MOV and insn.memory_position == 0:
        value = insn.immediates[0] if insn.immediates else cpu.vcpu.read(insn.registers[0])
    elif insn.id == C.X86_INS_XCHG and insn.registers:
        value = cpu.vcpu.read(insn.registers[0])
    else:
        return False
    linear = operand_linear(cpu, insn)
    user = cpu.vcpu.context.load().cpl == 3
    old = int.from_bytes(cpu.vcpu.read_linear(linear, size, MemoryAccess.READ, user), "little")
    cpu.vcpu.write_linear(linear, (value & mask).to_bytes(size, "little"), user)
    if insn.id == C.X86_INS_XCHG:
        cpu.vcpu.write(insn.registers[0], old)
    cpu.complete(insn)
    return True


def cr3_reserved_bits(cpu: "VmxCpu", value: int) -> bool:
    """Bits a MOV to CR3 would refuse: 63:52 in IA-32e mode (no PCID), 63:32 outside it,
    where MOV CR3 takes a 32-bit operand (SDM Vol. 2 MOV CR, Vol. 3A 4.5)."""
    long_mode = bool(cpu.vcpu.read_msr(IA32_EFER) & EFER_LMA)
    return bool(value >> 52) if long_mode else bool(value >> 32)


def _set_control(cpu: "VmxCpu", field: F, bits: int, on: bool) -> None:
    value = cpu.vmcs.read(field)
    cpu.vmcs.write(field, value | bits if on else value & ~bits)


def _shadowed(real: int, mask: int, shadow: int) -> int:
    return (real & ~mask) | (shadow & mask)


def _sync_ia32e_entry(cpu: "VmxCpu") -> None:
    """A CR0 write the hypervisor performed may have switched IA-32e mode (EFER.LMA): the
    "IA-32e mode guest" entry control must say the same at the next VM entry (SDM 26.3.1.1)."""
    lma = bool(cpu.vcpu.read_msr(IA32_EFER) & EFER_LMA)
    entry = cpu.vmcs.read(F.VM_ENTRY_CONTROLS)
    if bool(entry & EntryControls.IA32E_MODE_GUEST) != lma:
        cpu.vmcs.write(F.VM_ENTRY_CONTROLS, entry ^ EntryControls.IA32E_MODE_GUEST)
