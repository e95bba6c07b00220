"""Descriptor-table exits (46 GDTR/IDTR, 47 LDTR/TR), taken when descriptor-table exiting is on.

The hypervisor performs the instruction for the guest (SDM Vol. 2 LGDT/SGDT/LLDT/LTR...):
operand address from the decoded instruction, GDT/LDT descriptors read from guest memory,
the TSS descriptor marked busy by LTR, #GP(selector) for the wrong descriptor type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import capstone.x86_const as C
import unicorn.x86_const as U

from vtemu.hv.handlers.common import GP, done, inject_exception
from vtemu.hv.outcome import Outcome
from vtemu.machine.cpustate import SegmentCache
from vtemu.machine.decode import CodeMode, Instruction
from vtemu.vmx.instructions import operand_linear
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit

_TABLE_REGISTER = {C.X86_INS_LGDT: U.UC_X86_REG_GDTR, C.X86_INS_SGDT: U.UC_X86_REG_GDTR,
                   C.X86_INS_LIDT: U.UC_X86_REG_IDTR, C.X86_INS_SIDT: U.UC_X86_REG_IDTR}
_SELECTOR_REGISTER = {C.X86_INS_SLDT: "ldt", C.X86_INS_STR: "tr"}
LDT_TYPE, TSS_AVAILABLE, TSS_BUSY = 0x2, 0x9, 0xB


def handle_gdtr_idtr(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    insn = exit.instruction
    assert insn is not None
    linear = operand_linear(cpu, insn)
    base_size = 8 if insn.mode is CodeMode.BITS64 else 4
    register = _TABLE_REGISTER[insn.id]
    if insn.id in (C.X86_INS_LGDT, C.X86_INS_LIDT):
        data = cpu.vcpu.read_linear(linear, 2 + base_size)
        limit = int.from_bytes(data[:2], "little")
        base = int.from_bytes(data[2:], "little")
        operand16 = (insn.mode is CodeMode.BITS16) != (0x66 in insn.prefixes)
        if insn.mode is not CodeMode.BITS64 and operand16:
            base &= 0xFFFFFF  # 16-bit operand size loads a 24-bit base (SDM Vol. 2 LGDT)
        cpu.vcpu.engine.uc.reg_write(register, (0, base, limit, 0))
    else:
        _, base, limit, _ = cpu.vcpu.engine.uc.reg_read(register)
        data = limit.to_bytes(2, "little") + (base & ((1 << (8 * base_size)) - 1)).to_bytes(base_size, "little")
        cpu.vcpu.write_linear(linear, data, user=cpu.vcpu.context.load().cpl == 3)
    return done(exit, cpu)


def handle_ldtr_tr(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    insn = exit.instruction
    assert insn is not None
    if insn.id in _SELECTOR_REGISTER:
        selector = cpu.vcpu.context.load().table(_SELECTOR_REGISTER[insn.id]).selector
        _store_word(cpu, insn, selector)
        return done(exit, cpu)
    selector = _load_word(cpu, insn)
    wanted = LDT_TYPE if insn.id == C.X86_INS_LLDT else TSS_AVAILABLE
    cache = _system_descriptor(cpu, selector, wanted)
    if cache is None:
        return inject_exception(cpu, GP, selector & 0xFFFC)
    context = cpu.vcpu.context.load()
    context.set_table("ldt" if insn.id == C.X86_INS_LLDT else "tr", cache)
    context.store()
    return done(exit, cpu)


def _system_descriptor(cpu: "VmxCpu", selector: int, wanted: int) -> SegmentCache | None:
    """Load an LDT or available-TSS descriptor from the GDT (16 bytes in IA-32e mode)."""
    if selector & 0xFFFC == 0 and wanted == LDT_TYPE:
        return SegmentCache(0, 0, 0, 0)  # a null LDTR is legal and unusable
    gdt = cpu.vcpu.context.load().table("gdt")
    long_mode = bool(cpu.vcpu.read_msr(0xC0000080) & (1 << 10))
    index = selector & 0xFFF8
    width = 16 if long_mode else 8
    if selector & 4 or index + width - 1 > gdt.limit:
        return None
    raw = cpu.vcpu.read_linear(gdt.base + index, width)
    cache = SegmentCache.from_descriptor(selector, int.from_bytes(raw[:8], "little"))
    if not cache.system or cache.type != wanted or not cache.present:
        return None
    if long_mode:
        cache = SegmentCache(selector, cache.base | int.from_bytes(raw[8:12], "little") << 32,
                             cache.limit, cache.flags)
    if wanted == TSS_AVAILABLE:
        busy = raw[5] | 0x02  # type 9 -> 11 (SDM Vol. 3A 7.2.2)
        cpu.vcpu.write_linear(gdt.base + index + 5, bytes([busy]))
        cache = SegmentCache(selector, cache.base, cache.limit, cache.flags | (0x2 << 8))
    return cache


def _load_word(cpu: "VmxCpu", insn: Instruction) -> int:
    if insn.memory is None:
        return cpu.vcpu.read(insn.registers[0]) & 0xFFFF
    return int.from_bytes(cpu.vcpu.read_linear(operand_linear(cpu, insn), 2), "little")


def _store_word(cpu: "VmxCpu", insn: Instruction, value: int) -> None:
    if insn.memory is None:
        cpu.vcpu.write(insn.registers[0], value)
    else:
        cpu.vcpu.write_linear(operand_linear(cpu, insn), value.to_bytes(2, "little"),
                              user=cpu.vcpu.context.load().cpl == 3)


HANDLERS = {ExitReason.GDTR_IDTR_ACCESS: handle_gdtr_idtr, ExitReason.LDTR_TR_ACCESS: handle_ldtr_tr}
