"""A bare vCPU for machine-level tests: flat RAM, identity translation, CPU put in a chosen mode."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import unicorn.x86_const as U
from keystone import KS_ARCH_X86, KS_MODE_16, KS_MODE_32, KS_MODE_64, Ks

from vtemu.machine import layout
from vtemu.machine.clock import GuestClock
from vtemu.machine.cpustate import Seg, SegmentCache
from vtemu.machine.memory import HostMemory, HostRegion
from vtemu.machine.vcpu import Fill, GuestPageFault, MemoryAccess, PagingRegs, VCpu

RAM_SIZE = 4 * 1024 * 1024
RAM_HPA = layout.PARTITION_RAM_HPA

GDT = 0x1000
IDT = 0x2000
TSS = 0x3000
STACK0 = 0x9000      # ring-0 stack top (TSS.RSP0 / ESP0)
STACK3 = 0xA000      # ring-3 stack top
IST1 = 0xB000
CODE = 0x10000

# Flat descriptors (SDM Vol. 3A Figure 3-8).
CODE32 = 0x00CF9A000000FFFF
DATA32 = 0x00CF92000000FFFF
CODE64 = 0x00AF9A000000FFFF
USER_CODE32 = 0x00CFFA000000FFFF
USER_DATA32 = 0x00CFF2000000FFFF
USER_CODE64 = 0x00AFFA000000FFFF
SEL_CODE32, SEL_DATA, SEL_CODE64, SEL_UCODE32, SEL_UDATA, SEL_UCODE64, SEL_TSS = (
    0x08, 0x10, 0x18, 0x23, 0x2B, 0x33, 0x38)


class IdentityTranslator:
    """Linear == guest-physical == offset into RAM; pages listed in `missing` fault."""

    def __init__(self) -> None:
        self.missing: dict[int, int] = {}   # page -> #PF error code (P bit added for writes)

    def translate(self, paging: PagingRegs, linear: int, access: MemoryAccess, user: bool) -> Fill:
        page = linear & ~0xFFF
        if page in self.missing or page >= RAM_SIZE:
            code = self.missing.get(page, 0) | (2 if access is MemoryAccess.WRITE else 0)
            raise GuestPageFault(linear, code)
        return Fill(RAM_HPA + page, True, True, True)


class RecordingEvents:
    def __init__(self) -> None:
        self.outs: list[tuple[int, int, int]] = []

    def port_in(self, port: int, size: int) -> int:
        return 0

    def port_out(self, port: int, size: int, value: int) -> None:
        self.outs.append((port, size, value))

    def cpuid(self) -> None:
        return None

    def rdtsc(self, with_aux: bool) -> None:
        return None

    def sensitive_instruction(self, site: object) -> None:
        return None


@dataclass
class Machine:
    vcpu: VCpu
    memory: HostMemory
    translator: IdentityTranslator
    events: RecordingEvents

    def poke(self, gpa: int, data: bytes) -> None:
        self.memory.write(RAM_HPA + gpa, data)

    def peek(self, gpa: int, length: int) -> bytes:
        return self.memory.read(RAM_HPA + gpa, length)

    def u64(self, gpa: int) -> int:
        return struct.unpack("<Q", self.peek(gpa, 8))[0]

    def u32(self, gpa: int) -> int:
        return struct.unpack("<I", self.peek(gpa, 4))[0]

    def u16(self, gpa: int) -> int:
        return struct.unpack("<H", self.peek(gpa, 2))[0]

    def code(self, source: str, address: int = CODE, bits: int = 64) -> int:
        mode = {16: KS_MODE_16, 32: KS_MODE_32, 64: KS_MODE_64}[bits]
        encoding, _ = Ks(KS_ARCH_X86, mode).asm(source, address)
        self.poke(address, bytes(encoding))
        return address + len(encoding)


def bare_machine() -> Machine:
    memory = HostMemory()
    memory.add(HostRegion("ram", RAM_HPA, RAM_SIZE))
    translator = IdentityTranslator()
    events = RecordingEvents()
    vcpu = VCpu(0, memory, GuestClock(), translator, events)
    return Machine(vcpu, memory, translator, events)


def _write_gdt(machine: Machine) -> None:
    descriptors = [0, CODE32, DATA32, CODE64, USER_CODE32, USER_DATA32, USER_CODE64]
    tss_limit = 0x67
    tss_low = (tss_limit & 0xFFFF) | ((TSS & 0xFFFFFF) << 16) | (0x89 << 40) | ((TSS >> 24) << 56)
    table = b"".join(struct.pack("<Q", d) for d in descriptors) + struct.pack("<QQ", tss_low, 0)
    machine.poke(GDT, table)
    machine.vcpu.engine.uc.reg_write(U.UC_X86_REG_GDTR, (0, GDT, len(table) - 1, 0))


def _load(machine: Machine, cpl: int, code: int, code_selector: int, data: int,
          data_selector: int) -> None:
    context = machine.vcpu.context.load()
    context.load_segment(Seg.CS, SegmentCache.from_descriptor(code_selector, code))
    for seg in (Seg.DS, Seg.ES, Seg.FS, Seg.GS, Seg.SS):
        context.load_segment(seg, SegmentCache.from_descriptor(data_selector, data))
    context.set_table("tr", SegmentCache(SEL_TSS, TSS, 0x67, 0x8B00))
    context.store()
    assert machine.vcpu.context.load().cpl == cpl


def protected_mode(machine: Machine, cpl: int = 0) -> None:
    _write_gdt(machine)
    machine.vcpu.write(U.UC_X86_REG_CR0, 0x11)
    if cpl == 3:
        _load(machine, 3, USER_CODE32, SEL_UCODE32, USER_DATA32, SEL_UDATA)
    else:
        _load(machine, 0, CODE32, SEL_CODE32, DATA32, SEL_DATA)
    machine.vcpu.engine.uc.reg_write(U.UC_X86_REG_IDTR, (0, IDT, 0x7FF, 0))
    machine.poke(TSS + 4, struct.pack("<IH", STACK0, SEL_DATA))


def long_mode(machine: Machine, cpl: int = 0) -> None:
    _write_gdt(machine)
    vcpu = machine.vcpu
    vcpu.write(U.UC_X86_REG_CR4, 0x20)
    vcpu.write_msr(0xC0000080, 0x500)
    vcpu.write(U.UC_X86_REG_CR3, 0x100000)
    vcpu.write(U.UC_X86_REG_CR0, 0x80000011)
    if cpl == 3:
        _load(machine, 3, USER_CODE64, SEL_UCODE64, USER_DATA32, SEL_UDATA)
    else:
        _load(machine, 0, CODE64, SEL_CODE64, DATA32, SEL_DATA)
    vcpu.engine.uc.reg_write(U.UC_X86_REG_IDTR, (0, IDT, 0xFFF, 0))
    machine.poke(TSS + 4, struct.pack("<Q", STACK0))
    machine.poke(TSS + 36, struct.pack("<Q", IST1))


def idt_gate32(machine: Machine, vector: int, handler: int, gate_type: int = 0xE,
               dpl: int = 0, present: bool = True, selector: int = SEL_CODE32) -> None:
    high = (handler & 0xFFFF0000) | (present << 15) | (dpl << 13) | (gate_type << 8)
    low = (selector << 16) | (handler & 0xFFFF)
    machine.poke(IDT + 8 * vector, struct.pack("<II", low, high))


def idt_gate64(machine: Machine, vector: int, handler: int, gate_type: int = 0xE,
               dpl: int = 0, ist: int = 0, present: bool = True,
               selector: int = SEL_CODE64) -> None:
    high = (handler & 0xFFFF0000) | (present << 15) | (dpl << 13) | (gate_type << 8) | ist
    low = (selector << 16) | (handler & 0xFFFF)
    machine.poke(IDT + 16 * vector, struct.pack("<IIII", low, high, handler >> 32, 0))
