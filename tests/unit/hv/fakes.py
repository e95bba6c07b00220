"""A real partition that never runs, for feeding exit handlers made-up exits.

`Rig` wraps a Partition built the way `vtemu run` builds one (firmware ROM, devices, EPT,
the vtx VMCS) and its first vCPU, with helpers to put the CPU in a mode by writing its
registers and descriptor caches, to build page tables in guest RAM, to decode an
instruction placed in guest memory, and to make the VmExit a processor would report for it.
Handlers are then called directly (`rig.handle(exit)`) or through the partition's
dispatcher (`rig.dispatch(exit)`), and tests assert registers, memory, VMCS fields and
device state. Dummy devices record what reaches them.
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path

import unicorn.x86_const as U
from keystone import KS_ARCH_X86, KS_MODE_16, KS_MODE_32, KS_MODE_64, Ks

from vtemu.asm import build_guest
from vtemu.hv.boot import build_partitions
from vtemu.hv.outcome import Outcome
from vtemu.hv.partition import Partition, PartitionSpec
from vtemu.hv.runloop import COUNT_FOREVER
from vtemu.images import firmware_image
from vtemu.machine import layout
from vtemu.machine.cpustate import Seg, SegmentCache
from vtemu.machine.decode import CodeMode, Instruction
from vtemu.vmx.controls import EntryControls
from vtemu.vmx.cpu import VmxCpu
from vtemu.vmx.exit import ExitDecision, VmExit
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.interruption import InterruptionInfo
from vtemu.vmx.reasons import ExitReason

PROJECT = Path(__file__).resolve().parents[3]
RAM_HPA = layout.partition_ram_hpa(0)

# Guest-physical layout the helpers use (all inside low RAM, away from the firmware's areas).
GDT = 0x1000
IDT = 0x2000
TSS = 0x3000
PAGING = 0x20000      # page-table area (a few pages)
CODE = 0x10000
DATA = 0x40000

CODE32 = 0x00CF9A000000FFFF
DATA32 = 0x00CF92000000FFFF
CODE64 = 0x00AF9A000000FFFF
CODE16 = 0x00009A000000FFFF   # 16-bit protected-mode code, base 0, limit 64 KiB
DATA16 = 0x000092000000FFFF
USER_CODE32 = 0x00CFFA000000FFFF
USER_DATA32 = 0x00CFF2000000FFFF
SEL_CODE32, SEL_DATA32, SEL_CODE64, SEL_CODE16, SEL_DATA16, SEL_UCODE32, SEL_UDATA32 = (
    0x08, 0x10, 0x18, 0x20, 0x28, 0x33, 0x3B)
SEL_TSS = 0x40
SEL_LDT = 0x50
GDT_ENTRIES = [0, CODE32, DATA32, CODE64, CODE16, DATA16, USER_CODE32, USER_DATA32]

RFLAGS_IF = 1 << 9
RFLAGS_DF = 1 << 10
PTE_P, PTE_RW, PTE_US, PTE_PS = 1, 2, 4, 0x80

_KS_MODES = {CodeMode.BITS16: KS_MODE_16, CodeMode.BITS32: KS_MODE_32, CodeMode.BITS64: KS_MODE_64}


@functools.cache
def hello_image() -> bytes:
    return build_guest(PROJECT / "guests" / "hello.S")


@functools.cache
def firmware() -> bytes:
    return firmware_image()


def new_partition(kernel: bytes | None = None, ram_size: int = 16 << 20,
                  vcpus: int = 1) -> tuple[Partition, bytearray]:
    serial = bytearray()
    spec = PartitionSpec("t", kernel if kernel is not None else hello_image(), ram_size=ram_size,
                         vcpus=vcpus)
    partition = build_partitions([spec], firmware(), lambda index, spec: serial.extend)[0]
    return partition, serial


def assemble(source: str, address: int, mode: CodeMode) -> bytes:
    encoding, _ = Ks(KS_ARCH_X86, _KS_MODES[mode]).asm(source, address)
    return bytes(encoding)


# --- dummy devices ---------------------------------------------------------------------------

class RecordingPortDevice:
    """A port device whose reads return a programmed sequence (then `default`) and which
    records every access as (offset, size, value)."""

    def __init__(self, reads: list[int] | None = None, default: int = 0) -> None:
        self.pending = list(reads or [])
        self.default = default
        self.reads: list[tuple[int, int]] = []
        self.writes: list[tuple[int, int, int]] = []

    def io_read(self, offset: int, size: int) -> int:
        self.reads.append((offset, size))
        value = self.pending.pop(0) if self.pending else self.default
        return value & ((1 << (8 * size)) - 1)

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))


class RecordingMmioDevice:
    """An MMIO device with one value per offset (default `default`), recording accesses."""

    def __init__(self, values: dict[int, int] | None = None, default: int = 0) -> None:
        self.values = dict(values or {})
        self.default = default
        self.reads: list[tuple[int, int]] = []
        self.writes: list[tuple[int, int, int]] = []

    def mmio_read(self, offset: int, size: int) -> int:
        self.reads.append((offset, size))
        return self.values.get(offset, self.default) & ((1 << (8 * size)) - 1)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))


# --- the rig ---------------------------------------------------------------------------------

class Rig:
    """One unstarted partition and one of its vCPUs (0 unless `index`), with helpers for handler tests."""

    def __init__(self, kernel: bytes | None = None, vcpus: int = 1, index: int = 0) -> None:
        self.partition, self.serial = new_partition(kernel, vcpus=vcpus)
        self.cpu: VmxCpu = self.partition.vcpus[index]
        self.vcpu = self.cpu.vcpu
        self.outcomes: list[tuple[VmExit, Outcome]] = []
        self.partition.exit_observers.append(lambda exit, outcome, ns: self.outcomes.append((exit, outcome)))

    # --- memory ---------------------------------------------------------------------------
    def poke(self, gpa: int, data: bytes) -> None:
        self.partition.host.write(RAM_HPA + gpa, data)

    def peek(self, gpa: int, length: int) -> bytes:
        return self.partition.host.read(RAM_HPA + gpa, length)

    def u16(self, gpa: int) -> int:
        return int.from_bytes(self.peek(gpa, 2), "little")

    def u32(self, gpa: int) -> int:
        return int.from_bytes(self.peek(gpa, 4), "little")

    def u64(self, gpa: int) -> int:
        return int.from_bytes(self.peek(gpa, 8), "little")

    # --- registers ------------------------------------------------------------------------
    def set(self, **registers: int) -> None:
        """rig.set(rax=1, rcx=2): write registers by name."""
        for name, value in registers.items():
            self.vcpu.write(getattr(U, f"UC_X86_REG_{name.upper()}"), value)

    def get(self, name: str) -> int:
        return self.vcpu.read(getattr(U, f"UC_X86_REG_{name.upper()}"))

    # --- modes ----------------------------------------------------------------------------
    def _gdt(self, extra: list[int] | None = None) -> None:
        entries = GDT_ENTRIES + (extra or [])
        tss_low = 0x67 | ((TSS & 0xFFFFFF) << 16) | (0x89 << 40) | ((TSS >> 24) << 56)
        table = b"".join(struct.pack("<Q", d) for d in entries) + struct.pack("<QQ", tss_low, 0)
        self.poke(GDT, table)
        self.vcpu.engine.uc.reg_write(U.UC_X86_REG_GDTR, (0, GDT, len(table) - 1, 0))

    def _load(self, code: tuple[int, int], data: tuple[int, int]) -> None:
        context = self.vcpu.context.load()
        context.load_segment(Seg.CS, SegmentCache.from_descriptor(*code))
        for seg in (Seg.SS, Seg.DS, Seg.ES, Seg.FS, Seg.GS):
            context.load_segment(seg, SegmentCache.from_descriptor(*data))
        context.set_table("tr", SegmentCache(SEL_TSS, TSS, 0x67, 0x8B00))
        context.store()
        self.vcpu.write(U.UC_X86_REG_RFLAGS, 0x2)  # also invalidates the vCPU's cached state

    def protected_mode(self, cpl: int = 0, code16: bool = False) -> None:
        """Flat 32-bit protected mode (or a 16-bit code segment), paging off."""
        self._gdt()
        self.vcpu.write(U.UC_X86_REG_CR0, 0x11)
        self.vcpu.write(U.UC_X86_REG_CR4, 0)
        self.vcpu.write_msr(0xC0000080, 0)
        if cpl == 3:
            self._load((SEL_UCODE32, USER_CODE32), (SEL_UDATA32, USER_DATA32))
        elif code16:
            self._load((SEL_CODE16, CODE16), (SEL_DATA16, DATA16))
        else:
            self._load((SEL_CODE32, CODE32), (SEL_DATA32, DATA32))
        self.vcpu.engine.uc.reg_write(U.UC_X86_REG_IDTR, (0, IDT, 0x7FF, 0))

    def real_mode(self) -> None:
        """Real-address mode with every segment at 0 (the reset state has CS in the ROM)."""
        self.vcpu.write(U.UC_X86_REG_CR0, 0x60000010)
        self.vcpu.write(U.UC_X86_REG_CR4, 0)
        self.vcpu.write_msr(0xC0000080, 0)
        context = self.vcpu.context.load()
        for seg in Seg:
            context.load_segment(seg, SegmentCache.real_mode(0))
        context.store()
        self.vcpu.write(U.UC_X86_REG_RFLAGS, 0x2)
        self.vcpu.engine.uc.reg_write(U.UC_X86_REG_IDTR, (0, 0, 0x3FF, 0))

    def load_segment(self, seg: Seg, selector: int, base: int, limit: int = 0xFFFF,
                     flags: int | None = None) -> None:
        """Put an arbitrary descriptor cache in a segment register (what a load would leave)."""
        context = self.vcpu.context.load()
        if flags is None:
            flags = context.segment(seg).flags
        context.load_segment(seg, SegmentCache(selector, base, limit, flags))
        context.store()
        self.vcpu.write(U.UC_X86_REG_RFLAGS, self.get("rflags"))

    def paging32(self, missing: tuple[int, ...] = (), readonly: tuple[int, ...] = (),
                 user: bool = True, remap: dict[int, int] | None = None) -> None:
        """32-bit paging identity-mapping the first 4 MiB with 4 KiB pages; pages in `missing`
        are not present, pages in `readonly` are read-only (CR0.WP set), `remap` maps chosen
        linear pages to other guest-physical pages."""
        remap = remap or {}
        self.protected_mode()
        directory, table = PAGING, PAGING + 0x1000
        flags = PTE_P | PTE_RW | (PTE_US if user else 0)
        self.poke(directory, struct.pack("<I", table | flags) + bytes(4092))
        entries = []
        for page in range(1024):
            address = page << 12
            entry = remap.get(address, address) | flags
            if address in missing:
                entry = 0
            elif address in readonly:
                entry &= ~PTE_RW
            entries.append(entry)
        self.poke(table, struct.pack("<1024I", *entries))
        self.vcpu.write(U.UC_X86_REG_CR3, directory)
        self.vcpu.write(U.UC_X86_REG_CR0, 0x80010011)  # PG | WP | ET | PE
        self.vcpu.flush_tlb()

    def long_mode(self, missing: tuple[int, ...] = ()) -> None:
        """IA-32e 64-bit mode, 4-level paging identity-mapping the first 2 MiB with 4 KiB pages."""
        self._gdt()
        pml4, pdpt, pd, pt = (PAGING + i * 0x1000 for i in range(4))
        flags = PTE_P | PTE_RW | PTE_US
        self.poke(pml4, struct.pack("<Q", pdpt | flags) + bytes(4088))
        self.poke(pdpt, struct.pack("<Q", pd | flags) + bytes(4088))
        self.poke(pd, struct.pack("<Q", pt | flags) + bytes(4088))
        entries = [0 if (page << 12) in missing else (page << 12) | flags for page in range(512)]
        self.poke(pt, struct.pack("<512Q", *entries))
        self.vcpu.write(U.UC_X86_REG_CR4, 0x20)
        self.vcpu.write_msr(0xC0000080, 0x500)
        self.vcpu.write(U.UC_X86_REG_CR3, pml4)
        self.vcpu.write(U.UC_X86_REG_CR0, 0x80010011)
        self._load((SEL_CODE64, CODE64), (SEL_DATA32, DATA32))
        self.vcpu.engine.uc.reg_write(U.UC_X86_REG_IDTR, (0, IDT, 0xFFF, 0))
        self.vcpu.flush_tlb()
        # What a hypervisor launching a 64-bit guest programs (SDM 26.3.1.1: must match EFER.LMA).
        entry = self.cpu.vmcs.read(F.VM_ENTRY_CONTROLS)
        self.cpu.vmcs.write(F.VM_ENTRY_CONTROLS, entry | EntryControls.IA32E_MODE_GUEST)

    def idt_gate32(self, vector: int, handler: int, dpl: int = 0, gate_type: int = 0xE) -> None:
        high = (handler & 0xFFFF0000) | (1 << 15) | (dpl << 13) | (gate_type << 8)
        low = (SEL_CODE32 << 16) | (handler & 0xFFFF)
        self.poke(IDT + 8 * vector, struct.pack("<II", low, high))

    def idt_gate64(self, vector: int, handler: int, dpl: int = 0, gate_type: int = 0xE) -> None:
        high = (handler & 0xFFFF0000) | (1 << 15) | (dpl << 13) | (gate_type << 8)
        low = (SEL_CODE64 << 16) | (handler & 0xFFFF)
        self.poke(IDT + 16 * vector, struct.pack("<IIII", low, high, handler >> 32, 0))

    def init_pic(self, base: int = 0x20) -> None:
        """ICW1-4 to the master 8259 (vectors base..base+7), all IRQs unmasked."""
        ports = self.partition.ports
        for port, value in ((0x20, 0x11), (0x21, base), (0x21, 0x04), (0x21, 0x01), (0x21, 0x00)):
            ports.write(port, 1, value)

    def raise_irq(self, irq: int) -> None:
        line = self.partition.pic.irq_line(irq)
        line.set_level(False)
        line.set_level(True)

    def mode(self) -> CodeMode:
        return self.vcpu.code_mode()

    # --- instructions and exits -------------------------------------------------------------
    def place(self, code: bytes | str, address: int = CODE) -> Instruction:
        """Write an instruction (bytes or assembly) at CS:address, set RIP there, decode it."""
        mode = self.mode()
        raw = assemble(code, address, mode) if isinstance(code, str) else code
        linear = self.vcpu.segment(Seg.CS).base + address
        self.poke(linear, raw)  # the helpers' modes map linear == guest-physical here
        self.vcpu.rip = address
        insn = self.vcpu.decoder.decode(raw, address, mode)
        assert insn is not None, raw.hex()
        return insn

    def exit_for(self, reason: ExitReason, insn: Instruction, qualification: int = 0,
                 **fields: object) -> VmExit:
        """The exit the processor reports for `insn` (fault-like: RIP at the instruction)."""
        return VmExit(reason, insn.address, qualification=qualification,
                      instruction_length=insn.size, instruction=insn, **fields)  # type: ignore[arg-type]

    def handle(self, exit: VmExit) -> Outcome:
        """Run the partition's handler for this exit directly; returns its Outcome."""
        return self.partition.handlers[exit.reason](exit, self.cpu, self.partition)

    def dispatch(self, exit: VmExit) -> ExitDecision:
        """The full hypervisor path: dispatcher, statistics, observers, outcome -> decision."""
        return self.partition._dispatch(self.cpu, exit)

    # --- VMCS -------------------------------------------------------------------------------
    def injected(self) -> InterruptionInfo | None:
        raw = self.cpu.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD)
        info = InterruptionInfo.decode(raw)
        return info if info.valid else None

    def injected_error(self) -> int:
        return self.cpu.vmcs.read(F.VM_ENTRY_EXCEPTION_ERROR_CODE)


def run(rig: Rig, code: str | bytes | None = None, address: int = CODE, max_slices: int = 200,
        stack: int = 0x9000) -> int:
    """Run the vCPU (optionally from freshly placed code) until it halts, blocks or the
    partition ends; returns the number of slices that ran. No firmware: the rig's mode is the
    guest's state at the first VM entry. Slices are budgeted as the run loop budgets them
    (counted once guest time is live, ending at the next timer deadline), and due timers fire
    after each slice."""
    if code is not None:
        raw = assemble(code, address, rig.mode()) if isinstance(code, str) else code
        rig.poke(rig.vcpu.segment(Seg.CS).base + address, raw)
        rig.vcpu.rip = address
        rig.set(rsp=stack)
    clock = rig.partition.clock
    slices = 0
    while slices < max_slices and not rig.partition.ended:
        budget = None
        if clock.live:
            until = clock.instructions_until_deadline()
            budget = max(1, COUNT_FOREVER if until is None else until)
        if not rig.cpu.run_slice(budget):
            break
        clock.run_due_timers()
        slices += 1
    return slices
