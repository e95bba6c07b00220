"""Descriptor-table exits (46 GDTR/IDTR, 47 LDTR/TR) fed to the hypervisor, which performs
LGDT/LIDT/SGDT/SIDT/LLDT/LTR/SLDT/STR for the guest (SDM Vol. 2), memory operands included."""

from __future__ import annotations

import struct

import pytest
import unicorn.x86_const as U

from tests.unit.hv.fakes import DATA, GDT, SEL_LDT, SEL_TSS, Rig
from vtemu.hv.outcome import Resume
from vtemu.machine.cpustate import Seg
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.reasons import ExitReason

GDTR, IDTR = U.UC_X86_REG_GDTR, U.UC_X86_REG_IDTR
LDT_BASE = 0x50000


def _table(rig: Rig, register: int) -> tuple[int, int]:
    _, base, limit, _ = rig.vcpu.engine.uc.reg_read(register)
    return base, limit


def _run(rig: Rig, code: bytes | str, reason: ExitReason = ExitReason.GDTR_IDTR_ACCESS) -> int:
    insn = rig.place(code)
    displacement = insn.memory.disp if insn.memory else 0
    assert isinstance(rig.handle(rig.exit_for(reason, insn, displacement)), Resume)
    return insn.address + insn.size


def _ldt_descriptor(base: int, limit: int, kind: int = 0x82) -> int:
    return (limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (kind << 40) | ((base >> 24) << 56)


@pytest.fixture
def rig() -> Rig:
    rig = Rig()
    rig.protected_mode()
    return rig


# --- LGDT / LIDT / SGDT / SIDT ---------------------------------------------------------------

def test_lgdt_32_bit_memory_operand(rig: Rig) -> None:
    rig.poke(DATA, struct.pack("<HI", 0x2F, 0x1234_5678))
    next_rip = _run(rig, bytes.fromhex("0f 01 15") + struct.pack("<I", DATA))   # lgdt [DATA]
    assert _table(rig, GDTR) == (0x1234_5678, 0x2F)
    assert rig.get("rip") == next_rip


def test_lidt_with_base_and_index_registers(rig: Rig) -> None:
    rig.poke(DATA + 0x18, struct.pack("<HI", 0x7FF, 0x0008_0000))
    rig.set(rbx=DATA, rsi=4)
    _run(rig, bytes.fromhex("0f 01 5c b3 08"))        # lidt [ebx + esi*4 + 8]
    assert _table(rig, IDTR) == (0x8_0000, 0x7FF)


def test_lgdt_64_bit_loads_an_8_byte_base() -> None:
    rig = Rig()
    rig.long_mode()
    rig.poke(DATA, struct.pack("<HQ", 0xFFF, 0xFFFF_8000_0010_0000))
    rig.set(rbx=DATA)
    _run(rig, bytes.fromhex("0f 01 13"))               # lgdt [rbx]
    assert _table(rig, GDTR) == (0xFFFF_8000_0010_0000, 0xFFF)


def test_lgdt_16_bit_code_truncates_the_base_to_24_bits() -> None:
    rig = Rig()
    rig.protected_mode(code16=True)
    rig.poke(0x8000, struct.pack("<HI", 0x17, 0xAB12_3456))
    _run(rig, bytes.fromhex("0f 01 16 00 80"))          # lgdt [0x8000]
    assert _table(rig, GDTR) == (0x12_3456, 0x17)


def test_lgdt_16_bit_code_with_operand_size_prefix_loads_32_bits() -> None:
    rig = Rig()
    rig.protected_mode(code16=True)
    rig.poke(0x8000, struct.pack("<HI", 0x17, 0xAB12_3456))
    _run(rig, bytes.fromhex("66 0f 01 16 00 80"))       # o32 lgdt [0x8000]
    assert _table(rig, GDTR) == (0xAB12_3456, 0x17)


def test_lgdt_32_bit_code_with_operand_size_prefix_loads_24_bits(rig: Rig) -> None:
    rig.poke(DATA, struct.pack("<HI", 0x1234, 0x1234_5678))
    _run(rig, bytes.fromhex("66 0f 01 15") + struct.pack("<I", DATA))   # o16 lgdt [DATA]
    assert _table(rig, GDTR) == (0x34_5678, 0x1234)


def test_sgdt_and_sidt_store_limit_then_base(rig: Rig) -> None:
    rig.vcpu.engine.uc.reg_write(GDTR, (0, 0x0012_3000, 0x3F, 0))
    rig.vcpu.engine.uc.reg_write(IDTR, (0, 0x0045_6000, 0x7FF, 0))
    rig.poke(DATA, bytes(16))
    next_rip = _run(rig, bytes.fromhex("0f 01 05") + struct.pack("<I", DATA))      # sgdt [DATA]
    assert rig.peek(DATA, 6) == struct.pack("<HI", 0x3F, 0x0012_3000)
    assert rig.get("rip") == next_rip
    _run(rig, bytes.fromhex("0f 01 0d") + struct.pack("<I", DATA + 8))             # sidt [DATA+8]
    assert rig.peek(DATA + 8, 6) == struct.pack("<HI", 0x7FF, 0x0045_6000)


def test_sidt_64_bit_stores_10_bytes() -> None:
    rig = Rig()
    rig.long_mode()
    rig.vcpu.engine.uc.reg_write(IDTR, (0, 0xFFFF_8000_0000_2000, 0xFFF, 0))
    rig.poke(DATA, b"\xcc" * 12)
    rig.set(rdi=DATA)
    _run(rig, bytes.fromhex("0f 01 0f"))                 # sidt [rdi]
    assert rig.peek(DATA, 12) == struct.pack("<HQ", 0xFFF, 0xFFFF_8000_0000_2000) + b"\xcc\xcc"


def test_sgdt_with_a_segment_override_uses_that_segment_base(rig: Rig) -> None:
    rig.load_segment(Seg.FS, 0x10, 0x7000, 0xFFFFFFFF)
    rig.vcpu.engine.uc.reg_write(GDTR, (0, 0x1000, 0x4F, 0))
    _run(rig, bytes.fromhex("64 0f 01 05") + struct.pack("<I", DATA))              # sgdt fs:[DATA]
    assert rig.peek(0x7000 + DATA, 6) == struct.pack("<HI", 0x4F, 0x1000)
    assert rig.peek(DATA, 6) == bytes(6)


# --- LLDT / LTR / SLDT / STR -----------------------------------------------------------------

def _gdt_entry(rig: Rig, selector: int, descriptor: int) -> None:
    rig.poke(GDT + selector, struct.pack("<Q", descriptor))
    base, limit = _table(rig, GDTR)
    rig.vcpu.engine.uc.reg_write(GDTR, (0, base, max(limit, selector + 7), 0))


def test_lldt_loads_the_ldt_descriptor(rig: Rig) -> None:
    _gdt_entry(rig, SEL_LDT, _ldt_descriptor(LDT_BASE, 0x2F))
    rig.set(rax=SEL_LDT)
    next_rip = _run(rig, "lldt ax", ExitReason.LDTR_TR_ACCESS)
    ldt = rig.vcpu.context.load().table("ldt")
    assert (ldt.selector, ldt.base, ldt.limit, ldt.type) == (SEL_LDT, LDT_BASE, 0x2F, 0x2)
    assert rig.get("rip") == next_rip


def test_lldt_from_memory(rig: Rig) -> None:
    _gdt_entry(rig, SEL_LDT, _ldt_descriptor(LDT_BASE, 0x17))
    rig.poke(DATA, struct.pack("<H", SEL_LDT))
    _run(rig, bytes.fromhex("0f 00 15") + struct.pack("<I", DATA), ExitReason.LDTR_TR_ACCESS)
    assert rig.vcpu.context.load().table("ldt").base == LDT_BASE


def test_lldt_null_selector_makes_ldtr_null(rig: Rig) -> None:
    rig.set(rax=0)
    _run(rig, "lldt ax", ExitReason.LDTR_TR_ACCESS)
    assert rig.vcpu.context.load().table("ldt").selector == 0
    assert rig.injected() is None


@pytest.mark.parametrize(("selector", "descriptor"), [
    (SEL_LDT, _ldt_descriptor(LDT_BASE, 0x17, kind=0x89)),    # a TSS descriptor
    (SEL_LDT, _ldt_descriptor(LDT_BASE, 0x17, kind=0x02)),    # not present
    (SEL_LDT | 4, _ldt_descriptor(LDT_BASE, 0x17)),           # TI = 1: must be in the GDT
    (0x800, 0),                                               # beyond the GDT limit
])
def test_lldt_of_a_bad_descriptor_injects_gp_selector(rig: Rig, selector: int, descriptor: int) -> None:
    _gdt_entry(rig, SEL_LDT, descriptor)
    before = rig.vcpu.context.load().table("ldt")
    rig.set(rax=selector)
    insn = rig.place("lldt ax")
    rig.handle(rig.exit_for(ExitReason.LDTR_TR_ACCESS, insn))
    assert rig.cpu.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) == 0x80000B0D
    assert rig.injected_error() == selector & 0xFFFC
    assert rig.get("rip") == insn.address
    assert rig.vcpu.context.load().table("ldt") == before


def test_ltr_loads_tr_and_marks_the_tss_busy(rig: Rig) -> None:
    rig.set(rcx=SEL_TSS)
    _run(rig, "ltr cx", ExitReason.LDTR_TR_ACCESS)
    tr = rig.vcpu.context.load().table("tr")
    assert (tr.selector, tr.base, tr.limit, tr.type) == (SEL_TSS, 0x3000, 0x67, 0xB)
    assert rig.peek(GDT + SEL_TSS + 5, 1) == b"\x8b"        # the GDT descriptor is now busy


def test_ltr_of_a_busy_tss_injects_gp(rig: Rig) -> None:
    rig.set(rcx=SEL_TSS)
    _run(rig, "ltr cx", ExitReason.LDTR_TR_ACCESS)
    insn = rig.place("ltr cx")
    rig.handle(rig.exit_for(ExitReason.LDTR_TR_ACCESS, insn))
    assert rig.injected() is not None and rig.injected().vector == 13
    assert rig.injected_error() == SEL_TSS


def test_ltr_in_ia32e_mode_reads_a_16_byte_descriptor() -> None:
    rig = Rig()
    rig.long_mode()
    low = 0x67 | (0x5000 << 16) | (0x89 << 40)
    rig.poke(GDT + SEL_TSS, struct.pack("<QQ", low, 0xFFFF_8000))
    rig.set(rax=SEL_TSS)
    _run(rig, "ltr ax", ExitReason.LDTR_TR_ACCESS)
    tr = rig.vcpu.context.load().table("tr")
    assert tr.base == 0xFFFF_8000_0000_5000 and tr.type == 0xB


def test_sldt_and_str_to_registers(rig: Rig) -> None:
    _gdt_entry(rig, SEL_LDT, _ldt_descriptor(LDT_BASE, 0x17))
    rig.set(rax=SEL_LDT)
    _run(rig, "lldt ax", ExitReason.LDTR_TR_ACCESS)
    rig.set(rdx=0xFFFF_FFFF)
    _run(rig, "sldt edx", ExitReason.LDTR_TR_ACCESS)
    assert rig.get("rdx") == SEL_LDT                      # 32-bit destination: zero-extended
    rig.set(rbx=0xFFFF_FFFF)
    next_rip = _run(rig, "str bx", ExitReason.LDTR_TR_ACCESS)
    assert rig.get("rbx") == 0xFFFF_0000 | SEL_TSS        # 16-bit destination: the rest kept
    assert rig.get("rip") == next_rip


def test_str_and_sldt_to_memory(rig: Rig) -> None:
    rig.poke(DATA, b"\xcc" * 4)
    _run(rig, bytes.fromhex("0f 00 0d") + struct.pack("<I", DATA), ExitReason.LDTR_TR_ACCESS)  # str
    assert rig.peek(DATA, 4) == struct.pack("<H", SEL_TSS) + b"\xcc\xcc"
    _run(rig, bytes.fromhex("0f 00 05") + struct.pack("<I", DATA + 2), ExitReason.LDTR_TR_ACCESS)
    assert rig.u16(DATA + 2) == 0                         # the reset LDTR selector
