"""The #GP a deprivileged kernel takes: decode the instruction at RIP, perform it on the
virtual processor (engine.py), advance RIP.

At CPL 1 with IOPL 0 these fault with #GP(0) (SDM Vol. 2, each instruction's protected-mode
exceptions; Vol. 3A 5.9 "privileged instructions", Vol. 1 18.5 for I/O): CLI, STI, HLT,
IN/OUT/INS/OUTS, LGDT, LIDT, LTR, LLDT, MOV to/from CRn and DRn, RDMSR, WRMSR, INVLPG,
WBINVD, INVD, CLTS; INT n through a DPL 0 gate faults with #GP(vector * 8 + 2) (6.12.1.1);
IRET and far RET fault when the popped CS has an RPL below the CPL (Vol. 2 IRET, RET); MOV
SS and POP SS fault because the kernel's RPL 0 stack selector is not the CPL (Vol. 2 MOV).
Any other #GP, or one of these with another error code, is the guest's own and is
reflected to its handler.

I/O, MSRs and debug registers are handed to the hypervisor's own routines (the I/O, RDMSR,
WRMSR and MOV DR handlers every mode uses) as calls, the way the binary translator's
callouts are: the guest sees the same devices and MSR model as under vtx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import capstone.x86_const as C
import unicorn.x86_const as U

from vtemu.hv.outcome import RESUME, Outcome, RunEnd, Shutdown
from vtemu.machine.cpustate import Seg, SegmentCache
from vtemu.machine.decode import Instruction
from vtemu.machine.delivery import Event, EventType
from vtemu.machine.translation import TranslationFault
from vtemu.modes.deprivileged import compression as shadow
from vtemu.vmx import instructions
from vtemu.vmx.port_io import port_operands
from vtemu.vmx.qualifications import IoDirection, io_qualification
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.modes.deprivileged.engine import DeprivilegedEngine
    from vtemu.vmx.exit import VmExit

Emulator = Callable[["DeprivilegedEngine", Instruction, "VmExit"], Outcome]

GP = 13
RFLAGS_IF = 1 << 9
RFLAGS_IOPL = 3 << 12
ONLY_32BIT = "deprivileged mode runs 32-bit protected-mode kernels"
EFER = 0xC000_0080
EFER_LME = 1 << 8
CR0_PE, CR0_TS, CR0_NE, CR0_ET = 1, 1 << 3, 1 << 5, 1 << 4
RFLAGS_FIXED, RFLAGS_NT, RFLAGS_VM = 1 << 1, 1 << 14, 1 << 17
OPERAND_SIZE = 0x66


def emulate_trap(engine: "DeprivilegedEngine", exit: "VmExit") -> Outcome:
    insn = _decode(engine, exit.guest_rip)
    emulator = _emulator_for(insn) if insn is not None else None
    if insn is None or emulator is None or not _privilege_fault(insn, emulator, exit.interruption_error or 0):
        return engine.reflect(exit)
    engine.counters.traps += 1
    name = insn.mnemonic
    engine.counters.emulated[name] = engine.counters.emulated.get(name, 0) + 1
    if not engine.vcpu.in_code_hook:
        _end_interrupt_shadow(engine)
    engine.emulating = True
    try:
        return emulator(engine, insn, exit)
    except TranslationFault:
        return engine.reflect(exit)      # an operand the guest cannot reach: its own #GP/#PF
    finally:
        engine.emulating = False


def _end_interrupt_shadow(engine: "DeprivilegedEngine") -> None:
    """Blocking by STI or MOV SS covers one instruction (SDM 6.8.3): this one, which the
    VMM now completes, so the blocking ends here (STI and MOV SS set it again)."""
    context = engine.vcpu.context.load()
    if context.interrupt_shadow:
        context.clear_interrupt_shadow()
        context.store()


def _decode(engine: "DeprivilegedEngine", rip: int) -> Instruction | None:
    try:
        return engine.vcpu.decode_at(rip)
    except TranslationFault:
        return None


def _privilege_fault(insn: Instruction, emulator: Emulator, error: int) -> bool:
    """Did the instruction fault only because the kernel runs at CPL 1? (Segment loads and
    returns report a selector; the emulators check the selector themselves.)"""
    if insn.id == C.X86_INS_INT:
        return error == (insn.immediates[0] << 3) | 2
    return emulator in _SELECTOR_ERRORS or error == 0


def _emulator_for(insn: Instruction) -> Emulator | None:
    if insn.id == C.X86_INS_MOV:
        names = {operand.strip() for operand in insn.op_str.split(",")}
        if any(name.startswith("cr") for name in names):
            return _mov_cr
        if any(name.startswith("dr") for name in names):
            return _handed_over(instructions.mov_dr)
        return _mov_ss if insn.registers[:1] == (U.UC_X86_REG_SS,) else None
    if insn.id == C.X86_INS_POP:
        return _pop_ss if insn.registers[:1] == (U.UC_X86_REG_SS,) else None
    return EMULATORS.get(insn.id)


# --- helpers --------------------------------------------------------------------------------

def _complete(engine: "DeprivilegedEngine", insn: Instruction) -> Outcome:
    engine.cpu.complete(insn)
    return RESUME


def _outcome(engine: "DeprivilegedEngine") -> Outcome:
    """After a call into the hypervisor's routines: did it end the partition or halt?"""
    if engine.partition.ended:
        return engine.partition.result  # type: ignore[return-value]
    return RESUME


def _handed_over(perform: Callable) -> Emulator:
    """The instruction as the processor logic performs it, its exit served as a call."""
    def emulate(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
        perform(engine.cpu, insn)
        return _outcome(engine)
    return emulate


def guest_descriptor(engine: "DeprivilegedEngine", selector: int) -> int | None:
    """The guest's own descriptor for `selector` (its GDT; LDTs are not virtualized)."""
    table = engine.virtual.gdt
    index = selector & 0xFFF8
    if selector & 4 or index == 0 or index + 7 > table.limit:
        return None
    return int.from_bytes(engine.vcpu.read_linear(table.base + index, 8), "little")


def _word_source(engine: "DeprivilegedEngine", insn: Instruction) -> int:
    if insn.memory is None:
        return engine.vcpu.read(insn.registers[-1]) & 0xFFFF
    linear = instructions.operand_linear(engine.cpu, insn)
    return int.from_bytes(engine.vcpu.read_linear(linear, 2), "little")


def _reflect_gp(engine: "DeprivilegedEngine", error: int) -> Outcome:
    return engine.deliver(Event(GP, EventType.HARDWARE_EXCEPTION, error), engine.vcpu.rip)


def _stack_read(engine: "DeprivilegedEngine", offset: int, count: int) -> list[int]:
    """`count` dwords from SS:ESP + offset."""
    ss = engine.vcpu.segment(Seg.SS)
    esp = engine.vcpu.read(U.UC_X86_REG_ESP)
    raw = engine.vcpu.read_linear((ss.base + esp + offset) & 0xFFFFFFFF, 4 * count)
    return [int.from_bytes(raw[i:i + 4], "little") for i in range(0, 4 * count, 4)]


# --- interrupt flag and HLT -----------------------------------------------------------------

def _cli(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    engine.virtual.interrupts_enabled = False
    return _complete(engine, insn)


def _sti(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    """STI with IF = 0 blocks interrupts until after the next instruction (SDM Vol. 2 STI)."""
    was_enabled = engine.virtual.interrupts_enabled
    engine.virtual.interrupts_enabled = True
    engine.cpu.complete(insn)
    if not was_enabled:
        context = engine.vcpu.context.load()
        context.set_interrupt_shadow()
        context.store()
        engine.vcpu.write(U.UC_X86_REG_RIP, engine.vcpu.rip)   # the vCPU's state changed
    return engine.service_interrupts()


def _hlt(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    engine.cpu.complete(insn)
    engine.virtual.halted = True
    return engine.service_interrupts()


# --- I/O and MSRs: the hypervisor's routines --------------------------------------------------

def _io(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    port, size, direction = port_operands(engine.cpu, insn)
    qualification = io_qualification(size, direction, port, immediate=bool(insn.immediates))
    engine.cpu.exit_instruction(ExitReason.IO_INSTRUCTION, insn, qualification,
                                detail=f"{'in' if direction is IoDirection.IN else 'out'} {port:#x}")
    return _outcome(engine)


def _string_io(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    assert insn.memory is not None
    port = engine.vcpu.read(U.UC_X86_REG_DX) & 0xFFFF
    direction = IoDirection.IN if insn.id in _STRING_IN else IoDirection.OUT
    qualification = io_qualification(insn.memory.size, direction, port, string=True, rep=insn.has_rep)
    engine.cpu.exit_instruction(ExitReason.IO_INSTRUCTION, insn, qualification,
                                detail=f"{insn.mnemonic} {port:#x}")
    return _outcome(engine)


def _rdmsr(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    engine.cpu.exit_instruction(ExitReason.RDMSR, insn)
    return _outcome(engine)


def _wrmsr(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    if engine.vcpu.read(U.UC_X86_REG_ECX) == EFER and engine.vcpu.read(U.UC_X86_REG_EAX) & EFER_LME:
        return Shutdown(RunEnd.UNHANDLED_EXIT, f"{ONLY_32BIT}: the guest enabled long mode (EFER.LME)")
    engine.cpu.exit_instruction(ExitReason.WRMSR, insn)
    return _outcome(engine)


# --- control registers ------------------------------------------------------------------------

def _mov_cr(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    first, second = insn.registers[:2]
    vcpu = engine.vcpu
    if second in instructions.CONTROL_REGISTERS:       # MOV r32, CRn
        cr = instructions.CONTROL_REGISTERS[second]
        vcpu.write(first, _read_cr(engine, cr) & 0xFFFFFFFF)
        return _complete(engine, insn)
    cr = instructions.CONTROL_REGISTERS[first]
    value = vcpu.read(second) & 0xFFFFFFFF
    if cr == 0:
        return _write_cr0(engine, insn, value)
    if cr == 8:
        vcpu.tpr = value & 0xF
    else:
        vcpu.write(first, value)
        vcpu.flush_tlb()
    return _complete(engine, insn)


def _read_cr(engine: "DeprivilegedEngine", cr: int) -> int:
    if cr == 0:
        return engine.virtual.cr0
    if cr == 8:
        return engine.vcpu.tpr
    return engine.vcpu.read(getattr(U, f"UC_X86_REG_CR{cr}"))


def _write_cr0(engine: "DeprivilegedEngine", insn: Instruction, value: int) -> Outcome:
    """The guest's CR0 as written is virtual; the real one keeps NE and ET (engine.py)."""
    if not value & CR0_PE:
        return Shutdown(RunEnd.UNHANDLED_EXIT, f"{ONLY_32BIT}: the guest cleared CR0.PE")
    engine.virtual.cr0 = value
    engine.vcpu.write(U.UC_X86_REG_CR0, value | CR0_NE | CR0_ET)
    engine.vcpu.flush_tlb()
    return _complete(engine, insn)


def _clts(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    engine.virtual.cr0 &= ~CR0_TS
    engine.vcpu.write(U.UC_X86_REG_CR0, engine.vcpu.read(U.UC_X86_REG_CR0) & ~CR0_TS)
    return _complete(engine, insn)


def _invlpg(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    engine.vcpu.flush_tlb()               # a superset of dropping the one entry
    return _complete(engine, insn)


def _cache(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    return _complete(engine, insn)        # WBINVD, INVD: caches are coherent here


# --- descriptor tables --------------------------------------------------------------------------

def _load_table(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    """LGDT/LIDT: a 16-bit limit and a base, 24 bits of it with a 16-bit operand size
    (SDM Vol. 2 LGDT/LIDT); the shadow table follows."""
    linear = instructions.operand_linear(engine.cpu, insn)
    raw = engine.vcpu.read_linear(linear, 6)
    limit, base = int.from_bytes(raw[:2], "little"), int.from_bytes(raw[2:], "little")
    if OPERAND_SIZE in insn.prefixes:
        base &= 0xFFFFFF
    table = SegmentCache(0, base, limit, 0)
    if insn.id == C.X86_INS_LGDT:
        engine.virtual.gdt = table
    else:
        engine.virtual.idt = table
    engine.recompress()
    return _complete(engine, insn)


def _ltr(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    """LTR: an available 32-bit TSS from the guest's GDT, marked busy there (SDM Vol. 2 LTR)."""
    selector = _word_source(engine, insn)
    raw = guest_descriptor(engine, selector)
    if raw is None or (raw >> 40) & 0x1F != 0x9 or not raw & shadow.DESC_P:
        return _reflect_gp(engine, selector & 0xFFFC)
    raw |= 2 << 40                                          # busy
    table = engine.virtual.gdt
    engine.vcpu.write_linear(table.base + (selector & 0xFFF8) + 5, bytes([(raw >> 40) & 0xFF]))
    engine.virtual.tr = SegmentCache.from_descriptor(selector, raw)
    engine.recompress()
    return _complete(engine, insn)


def _lldt(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    if _word_source(engine, insn) & 0xFFFC:
        return Shutdown(RunEnd.UNHANDLED_EXIT, "deprivileged mode does not virtualize LDTs (LLDT)")
    engine.virtual.ldt = SegmentCache(0, 0, 0, 0)
    engine.recompress()
    return _complete(engine, insn)


# --- returns, INT n, stack segment ----------------------------------------------------------------

def _iret(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    """IRET to the kernel (RPL 0) or to user code (RPL 3) from the virtual ring 0 (SDM Vol. 2
    IRET, protected mode, no nested task); the popped IF becomes the virtual IF."""
    if OPERAND_SIZE in insn.prefixes or engine.vcpu.read(U.UC_X86_REG_RFLAGS) & RFLAGS_NT:
        return Shutdown(RunEnd.UNHANDLED_EXIT, "deprivileged mode: 16-bit IRET or a nested-task return")
    eip, cs, eflags = _stack_read(engine, 0, 3)
    cs &= 0xFFFF
    if eflags & RFLAGS_VM:
        return Shutdown(RunEnd.UNHANDLED_EXIT, "deprivileged mode: IRET to virtual-8086 mode")
    if cs & 3 == 0:
        return _return_to_kernel(engine, eip, cs, 12, eflags)
    if cs & 3 == 3:
        return _return_to_user(engine, eip, cs, eflags)
    return _reflect_gp(engine, cs & 0xFFFC)


def _far_ret(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    """RETF to the kernel's own RPL 0 code (SDM Vol. 2 RET, same privilege)."""
    eip, cs = _stack_read(engine, 0, 2)
    if cs & 3 or OPERAND_SIZE in insn.prefixes:
        return _reflect_gp(engine, cs & 0xFFFC)
    release = insn.immediates[0] if insn.immediates else 0
    return _return_to_kernel(engine, eip, cs & 0xFFFF, 8 + release, None)


def _code_cache(engine: "DeprivilegedEngine", selector: int, rpl: int) -> SegmentCache | None:
    raw = guest_descriptor(engine, selector)
    if raw is None or not raw & shadow.DESC_S or not raw & shadow.CODE_TYPE or not raw & shadow.DESC_P:
        return None
    if (raw >> shadow.DESC_DPL_SHIFT) & 3 != rpl:
        return None
    return SegmentCache.from_descriptor((selector & ~3) | max(rpl, 1), shadow.compress(raw))


def _return_to_kernel(engine: "DeprivilegedEngine", eip: int, cs: int, popped: int,
                      eflags: int | None) -> Outcome:
    code = _code_cache(engine, cs, 0)
    if code is None:
        return _reflect_gp(engine, cs & 0xFFFC)
    vcpu = engine.vcpu
    context = vcpu.context.load()
    context.load_segment(Seg.CS, code)
    if eflags is not None:
        context.set_nmi_blocked(False)                      # IRET ends NMI blocking (SDM 6.7.1)
    context.store()
    vcpu.write(U.UC_X86_REG_ESP, (vcpu.read(U.UC_X86_REG_ESP) + popped) & 0xFFFFFFFF)
    vcpu.write(U.UC_X86_REG_RIP, eip)
    if eflags is not None:
        engine.virtual.interrupts_enabled = bool(eflags & RFLAGS_IF)
        vcpu.write(U.UC_X86_REG_RFLAGS, (eflags & ~RFLAGS_IOPL) | RFLAGS_IF | RFLAGS_FIXED)
    vcpu.retire_emulated()
    return engine.service_interrupts()


def _return_to_user(engine: "DeprivilegedEngine", eip: int, cs: int, eflags: int) -> Outcome:
    """To CPL 3: CS, SS and ESP from the frame, and data segments the user may not hold
    become null (SDM Vol. 2 IRET, RETURN-TO-OUTER-PRIVILEGE-LEVEL)."""
    esp, ss = _stack_read(engine, 12, 2)
    code = _code_cache(engine, cs, 3)
    stack = guest_descriptor(engine, ss & 0xFFFF)
    if code is None or stack is None or ss & 3 != 3 or (stack >> shadow.DESC_DPL_SHIFT) & 3 != 3:
        return _reflect_gp(engine, (cs if code is None else ss) & 0xFFFC)
    vcpu = engine.vcpu
    context = vcpu.context.load()
    context.load_segment(Seg.CS, code)
    context.load_segment(Seg.SS, SegmentCache.from_descriptor(ss & 0xFFFF, shadow.compress(stack)))
    for seg in (Seg.DS, Seg.ES, Seg.FS, Seg.GS):
        cache = context.segment(seg)
        if cache.dpl < 3 and not (cache.type & 0xC == 0xC):   # not conforming code
            context.load_segment(seg, SegmentCache(0, 0, 0, 0))
    context.set_nmi_blocked(False)
    context.store()
    vcpu.write(U.UC_X86_REG_ESP, esp)
    vcpu.write(U.UC_X86_REG_RIP, eip)
    vcpu.write(U.UC_X86_REG_RFLAGS, (eflags & ~RFLAGS_VM) | RFLAGS_FIXED)
    vcpu.retire_emulated()
    return engine.service_interrupts()


def _int(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    """INT n through a DPL 0 gate: the virtual ring 0 may use it (SDM 6.12.1.1)."""
    return engine.deliver(Event(insn.immediates[0], EventType.SOFTWARE_INTERRUPT), insn.next_address)


def _mov_ss(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    return _load_stack(engine, insn, _word_source(engine, insn), popped=0)


def _pop_ss(engine: "DeprivilegedEngine", insn: Instruction, exit: "VmExit") -> Outcome:
    return _load_stack(engine, insn, _stack_read(engine, 0, 1)[0] & 0xFFFF, popped=4)


def _load_stack(engine: "DeprivilegedEngine", insn: Instruction, selector: int, popped: int) -> Outcome:
    """The kernel's RPL 0 stack selector, loaded compressed (RPL 1, DPL 1); a load blocks
    interrupts for one instruction (SDM Vol. 2 MOV, POP)."""
    raw = guest_descriptor(engine, selector)
    writable_data = raw is not None and raw & shadow.DESC_S and not raw & shadow.CODE_TYPE and raw >> 41 & 1
    if not writable_data or selector & 3 or (raw >> shadow.DESC_DPL_SHIFT) & 3 or not raw & shadow.DESC_P:
        return _reflect_gp(engine, selector & 0xFFFC)
    vcpu = engine.vcpu
    context = vcpu.context.load()
    context.load_segment(Seg.SS, SegmentCache.from_descriptor(selector | 1, shadow.compress(raw)))
    context.set_interrupt_shadow()
    context.store()
    vcpu.write(U.UC_X86_REG_ESP, (vcpu.read(U.UC_X86_REG_ESP) + popped) & 0xFFFFFFFF)
    return _complete(engine, insn)


_STRING_IN = frozenset({C.X86_INS_INSB, C.X86_INS_INSW, C.X86_INS_INSD})
EMULATORS: dict[int, Emulator] = {
    C.X86_INS_CLI: _cli, C.X86_INS_STI: _sti, C.X86_INS_HLT: _hlt,
    C.X86_INS_IN: _io, C.X86_INS_OUT: _io,
    **{getattr(C, f"X86_INS_{name}"): _string_io
       for name in ("INSB", "INSW", "INSD", "OUTSB", "OUTSW", "OUTSD")},
    C.X86_INS_RDMSR: _rdmsr, C.X86_INS_WRMSR: _wrmsr,
    C.X86_INS_CLTS: _clts, C.X86_INS_INVLPG: _invlpg,
    C.X86_INS_WBINVD: _cache, C.X86_INS_INVD: _cache,
    C.X86_INS_LGDT: _load_table, C.X86_INS_LIDT: _load_table,
    C.X86_INS_LTR: _ltr, C.X86_INS_LLDT: _lldt,
    C.X86_INS_IRETD: _iret, C.X86_INS_IRET: _iret,
    C.X86_INS_RETF: _far_ret,
    C.X86_INS_INT: _int,
}
# Emulators of #GPs whose error code is a selector, not 0.
_SELECTOR_ERRORS = (_iret, _far_ret, _mov_ss, _pop_ss)
