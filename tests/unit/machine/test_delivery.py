"""Interrupt and exception delivery through the IVT and IDT, checked frame by frame."""

import struct

import pytest
import unicorn.x86_const as U

from vtemu.machine.cpustate import Seg, SegmentCache
from vtemu.machine.delivery import Event, EventType, TripleFault, deliver, escalate
from tests.unit.machine.harness import (IDT, IST1, SEL_CODE32, SEL_CODE64, SEL_DATA, SEL_UCODE32,
                                        SEL_UCODE64, SEL_UDATA, STACK0, STACK3, bare_machine,
                                        idt_gate32, idt_gate64, long_mode, protected_mode)

IF = 1 << 9
RF = 1 << 16
HANDLER = 0x20000


def test_real_mode_interrupt_uses_the_ivt_and_pushes_flags_cs_ip():
    m = bare_machine()
    vcpu = m.vcpu
    context = vcpu.context.load()
    context.load_segment(Seg.CS, SegmentCache.real_mode(0x1000))
    context.load_segment(Seg.SS, SegmentCache.real_mode(0x0000))
    context.store()
    vcpu.write(U.UC_X86_REG_RSP, 0x7000)
    vcpu.write(U.UC_X86_REG_RFLAGS, 0x202)
    m.poke(4 * 0x21, struct.pack("<HH", 0x0123, 0x2000))
    deliver(vcpu, Event(0x21, EventType.SOFTWARE_INTERRUPT), return_rip=0x0456)
    assert vcpu.segment(Seg.CS).selector == 0x2000
    assert vcpu.segment(Seg.CS).base == 0x20000
    assert vcpu.rip == 0x0123
    assert vcpu.read(U.UC_X86_REG_RSP) == 0x7000 - 6
    assert struct.unpack("<HHH", m.peek(0x7000 - 6, 6)) == (0x0456, 0x1000, 0x202)
    assert not vcpu.read(U.UC_X86_REG_RFLAGS) & IF


def test_protected_mode_interrupt_gate_same_privilege_pushes_error_code_and_clears_if():
    m = bare_machine()
    protected_mode(m)
    vcpu = m.vcpu
    vcpu.write(U.UC_X86_REG_RSP, 0x8000)
    vcpu.write(U.UC_X86_REG_RFLAGS, 0x202)
    idt_gate32(m, 13, HANDLER)
    deliver(vcpu, Event.exception(13, 0x18), return_rip=0x10005)
    assert vcpu.rip == HANDLER
    assert vcpu.read(U.UC_X86_REG_RSP) == 0x8000 - 16
    error, eip, cs, eflags = struct.unpack("<IIII", m.peek(0x8000 - 16, 16))
    assert (error, eip, cs) == (0x18, 0x10005, SEL_CODE32)
    assert eflags == 0x202 | RF, "fault-class exceptions push RF=1 (SDM 17.3.1.1)"
    assert not vcpu.read(U.UC_X86_REG_RFLAGS) & IF


def test_protected_mode_trap_gate_keeps_if():
    m = bare_machine()
    protected_mode(m)
    m.vcpu.write(U.UC_X86_REG_RSP, 0x8000)
    m.vcpu.write(U.UC_X86_REG_RFLAGS, 0x202)
    idt_gate32(m, 0x80, HANDLER, gate_type=0xF, dpl=0)
    deliver(m.vcpu, Event(0x80, EventType.SOFTWARE_INTERRUPT), return_rip=0x10002)
    assert m.vcpu.read(U.UC_X86_REG_RFLAGS) & IF
    assert struct.unpack("<III", m.peek(0x8000 - 12, 12)) == (0x10002, SEL_CODE32, 0x202)


def test_protected_mode_privilege_change_switches_to_tss_stack():
    m = bare_machine()
    protected_mode(m, cpl=3)
    vcpu = m.vcpu
    vcpu.write(U.UC_X86_REG_RSP, STACK3)
    vcpu.write(U.UC_X86_REG_RFLAGS, 0x202)
    idt_gate32(m, 0x80, HANDLER, dpl=3)
    deliver(vcpu, Event(0x80, EventType.SOFTWARE_INTERRUPT), return_rip=0x10002)
    assert vcpu.context.load().cpl == 0
    assert vcpu.segment(Seg.SS).selector == SEL_DATA
    assert vcpu.read(U.UC_X86_REG_RSP) == STACK0 - 20
    frame = struct.unpack("<IIIII", m.peek(STACK0 - 20, 20))
    assert frame == (0x10002, SEL_UCODE32, 0x202, STACK3, SEL_UDATA)


def test_software_interrupt_through_a_dpl0_gate_from_ring3_is_a_gp_with_idt_error_code():
    m = bare_machine()
    protected_mode(m, cpl=3)
    vcpu = m.vcpu
    vcpu.write(U.UC_X86_REG_RSP, STACK3)
    idt_gate32(m, 0x80, HANDLER, dpl=0)
    idt_gate32(m, 13, HANDLER + 0x100)
    delivered = deliver(vcpu, Event(0x80, EventType.SOFTWARE_INTERRUPT), return_rip=0x10002)
    assert delivered.vector == 13
    assert vcpu.rip == HANDLER + 0x100
    assert m.u32(STACK0 - 24) == (0x80 << 3) | 2, "error code: IDT bit set, EXT clear for INT n"


def test_long_mode_same_privilege_aligns_stack_and_pushes_ss_rsp():
    m = bare_machine()
    long_mode(m)
    vcpu = m.vcpu
    vcpu.write(U.UC_X86_REG_RSP, 0x8008)
    vcpu.write(U.UC_X86_REG_RFLAGS, 0x202)
    idt_gate64(m, 14, HANDLER)
    deliver(vcpu, Event.exception(14, 0x2), return_rip=0x10010)
    assert vcpu.rip == HANDLER
    rsp = vcpu.read(U.UC_X86_REG_RSP)
    assert rsp == 0x8000 - 48, "RSP is aligned down to 16 bytes before the pushes"
    error, rip, cs, rflags, old_rsp, ss = struct.unpack("<6Q", m.peek(rsp, 48))
    assert (error, rip, cs, old_rsp, ss) == (0x2, 0x10010, SEL_CODE64, 0x8008, SEL_DATA)
    assert rflags == 0x202 | RF


def test_long_mode_privilege_change_uses_rsp0_and_null_ss():
    m = bare_machine()
    long_mode(m, cpl=3)
    vcpu = m.vcpu
    vcpu.write(U.UC_X86_REG_RSP, STACK3)
    vcpu.write(U.UC_X86_REG_RFLAGS, 0x202)
    idt_gate64(m, 0x80, HANDLER, dpl=3)
    deliver(vcpu, Event(0x80, EventType.SOFTWARE_INTERRUPT), return_rip=0x10002)
    assert vcpu.context.load().cpl == 0
    assert vcpu.segment(Seg.SS).selector == 0
    assert vcpu.read(U.UC_X86_REG_RSP) == STACK0 - 40
    rip, cs, rflags, rsp, ss = struct.unpack("<5Q", m.peek(STACK0 - 40, 40))
    assert (rip, cs, rflags, rsp, ss) == (0x10002, SEL_UCODE64, 0x202, STACK3, SEL_UDATA)


def test_long_mode_ist_stack_is_used_even_without_privilege_change():
    m = bare_machine()
    long_mode(m)
    m.vcpu.write(U.UC_X86_REG_RSP, 0x8000)
    idt_gate64(m, 8, HANDLER, ist=1)
    deliver(m.vcpu, Event.exception(8, 0), return_rip=0x10000)
    assert m.vcpu.read(U.UC_X86_REG_RSP) == IST1 - 48


def test_not_present_gate_raises_np_with_idt_and_ext_bits():
    m = bare_machine()
    long_mode(m)
    m.vcpu.write(U.UC_X86_REG_RSP, 0x8000)
    idt_gate64(m, 6, HANDLER, present=False)
    idt_gate64(m, 11, HANDLER + 0x100)
    delivered = deliver(m.vcpu, Event.exception(6), return_rip=0x10000)
    assert delivered == Event.exception(11, (6 << 3) | 2 | 1)
    assert m.vcpu.rip == HANDLER + 0x100


def test_contributory_fault_while_delivering_page_fault_becomes_double_fault():
    m = bare_machine()
    long_mode(m)
    m.vcpu.write(U.UC_X86_REG_RSP, 0x8000)
    idt_gate64(m, 14, HANDLER, present=False)   # delivering #PF raises #NP (contributory)
    idt_gate64(m, 8, HANDLER + 0x800)
    delivered = deliver(m.vcpu, Event.exception(14, 0), return_rip=0x10000)
    assert delivered == Event.exception(8, 0)
    assert m.vcpu.rip == HANDLER + 0x800


def test_page_fault_on_the_handler_stack_sets_cr2_and_is_delivered():
    m = bare_machine()
    long_mode(m)
    m.vcpu.write(U.UC_X86_REG_RSP, 0x50000)
    m.translator.missing[0x4F000] = 0
    idt_gate64(m, 3, HANDLER, dpl=3)
    idt_gate64(m, 14, HANDLER + 0x100, ist=1)
    delivered = deliver(m.vcpu, Event(3, EventType.SOFTWARE_EXCEPTION), return_rip=0x10001)
    assert delivered.vector == 14
    assert delivered.error_code == 2, "a write to a not-present page"
    assert m.vcpu.read(U.UC_X86_REG_CR2) == 0x50000 - 8


def test_fault_while_delivering_double_fault_is_a_triple_fault():
    m = bare_machine()
    long_mode(m)
    m.vcpu.write(U.UC_X86_REG_RSP, 0x8000)
    idt_gate64(m, 13, HANDLER, present=False)
    idt_gate64(m, 8, HANDLER, present=False)
    with pytest.raises(TripleFault):
        deliver(m.vcpu, Event.exception(13, 0), return_rip=0x10000)


def test_idt_limit_exceeded_is_gp():
    m = bare_machine()
    long_mode(m)
    m.vcpu.engine.uc.reg_write(U.UC_X86_REG_IDTR, (0, IDT, 16 * 14 - 1, 0))
    idt_gate64(m, 13, HANDLER)
    m.vcpu.write(U.UC_X86_REG_RSP, 0x8000)
    delivered = deliver(m.vcpu, Event(0x40, EventType.EXTERNAL_INTERRUPT), return_rip=0x10000)
    assert delivered == Event.exception(13, (0x40 << 3) | 2 | 1)


@pytest.mark.parametrize("first, second, expected", [
    (Event.exception(0), Event.exception(13, 0), 8),        # contributory + contributory
    (Event.exception(14, 0), Event.exception(14, 0), 8),    # page fault + page fault
    (Event.exception(14, 0), Event.exception(10, 0), 8),    # page fault + contributory
    (Event.exception(13, 0), Event.exception(14, 0), 14),   # contributory + page fault: serial
    (Event.exception(3), Event.exception(13, 0), 13),       # benign + anything: serial
    (Event(0x20, EventType.EXTERNAL_INTERRUPT), Event.exception(13, 0), 13),
])
def test_double_fault_table(first, second, expected):
    assert escalate(first, second).vector == expected


def test_double_fault_then_contributory_is_triple_fault():
    with pytest.raises(TripleFault):
        escalate(Event.exception(8, 0), Event.exception(13, 0))


def test_a_faulting_push_writes_no_partial_frame():
    """#GP's frame straddles two pages and the lower one is missing: #GP -> #PF (serial),
    whose frame faults again -> #DF, whose gate is absent -> shutdown. The upper page,
    which every frame touched first, must still hold its old bytes."""
    m = bare_machine()
    protected_mode(m)
    m.vcpu.write(U.UC_X86_REG_RSP, 0x50002)
    m.translator.missing[0x4F000] = 0
    idt_gate32(m, 13, HANDLER)
    idt_gate32(m, 14, HANDLER + 0x100)
    m.poke(0x50000, b"\xAA\xAA")
    with pytest.raises(TripleFault):
        deliver(m.vcpu, Event.exception(13, 0), return_rip=0x10000)
    assert m.peek(0x50000, 2) == b"\xAA\xAA"
