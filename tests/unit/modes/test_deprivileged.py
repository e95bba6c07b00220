"""The deprivileged mode's pieces: ring compression of descriptors, and the #GP emulator on
hand-built states (a rig partition in flat 32-bit protected mode, taken over by the engine
as at a kernel's entry, then fed the #GP exits the processor reports at CPL 1)."""

from __future__ import annotations

import struct

import pytest

from tests.unit.hv.fakes import (CODE32, DATA32, GDT, IDT, SEL_CODE32, SEL_DATA32, USER_CODE32,
                                 Rig)
from vtemu.hv.outcome import Halt, Resume, Shutdown
from vtemu.machine.cpustate import Seg
from vtemu.machine.translation import MemoryAccess, TranslationFault
from vtemu.modes.deprivileged import compression as shadow
from vtemu.modes.deprivileged.engine import DeprivilegedEngine
from vtemu.vmx.exit import VmExit
from vtemu.vmx.interruption import InterruptionInfo, InterruptionType
from vtemu.vmx.reasons import ExitReason

STACK = 0x9000
HANDLER = 0x18000


# --- compression -------------------------------------------------------------------------------

def test_kernel_code_becomes_ring_1_and_ends_below_the_window() -> None:
    compressed = shadow.compress(CODE32)
    assert (compressed >> shadow.DESC_DPL_SHIFT) & 3 == 1
    assert shadow.descriptor_limit(compressed) == shadow.WINDOW_BASE - 1
    assert shadow.descriptor_base(compressed) == 0
    assert compressed & ~(shadow.DESC_DPL | 0xF00000000FFFF) == CODE32 & ~(shadow.DESC_DPL | 0xF00000000FFFF)


def test_user_segments_keep_ring_3_but_are_truncated() -> None:
    compressed = shadow.compress(USER_CODE32)
    assert (compressed >> shadow.DESC_DPL_SHIFT) & 3 == 3
    assert shadow.descriptor_limit(compressed) == shadow.WINDOW_BASE - 1


def test_byte_granular_segment_crossing_the_window_is_cut_to_the_byte() -> None:
    base = shadow.WINDOW_BASE - 0x100
    raw = 0x00409200_0000FFFF | ((base & 0xFFFFFF) << 16) | ((base >> 24) << 56)
    assert shadow.descriptor_limit(shadow.compress(raw)) == 0xFF


def test_segments_below_the_window_and_system_descriptors_are_unchanged_but_ring() -> None:
    small = 0x00009A000000FFFF                       # 64 KiB code at 0, DPL 0
    assert shadow.compress(small) == small | (1 << shadow.DESC_DPL_SHIFT)
    tss = shadow.tss_descriptor(0x3000, 0x67, busy=False)
    assert shadow.compress(tss) == tss


def test_shadow_gdt_compresses_every_entry() -> None:
    table = struct.pack("<QQQ", 0, CODE32, DATA32)
    copy = struct.unpack("<QQQ", shadow.shadow_gdt(table))
    assert copy == (0, shadow.compress(CODE32), shadow.compress(DATA32))


def test_vmm_tss_has_the_ring_1_stack_and_no_io_bitmap() -> None:
    tss = shadow.vmm_tss(0x8000, 0x11)
    assert struct.unpack_from("<IH", tss, shadow.TSS_ESP1) == (0x8000, 0x11)
    assert struct.unpack_from("<H", tss, shadow.TSS_IOMAP)[0] > shadow.TSS_LIMIT


# --- the engine on a hand-built kernel --------------------------------------------------------

@pytest.fixture
def rig() -> tuple[Rig, DeprivilegedEngine]:
    rig = Rig()
    rig.protected_mode()
    rig.set(esp=STACK, rflags=0x2)
    engine = DeprivilegedEngine(rig.cpu, rig.partition)
    engine.engage()
    return rig, engine


def _gp(rig: Rig, error: int = 0) -> VmExit:
    return VmExit(ExitReason.EXCEPTION_OR_NMI, rig.vcpu.rip,
                  interruption=InterruptionInfo.exception(13, error_code=True), interruption_error=error)


def _trap(rig: Rig, engine: DeprivilegedEngine, code: str, error: int = 0):
    insn = rig.place(code)
    return insn, engine.on_exception(_gp(rig, error))


def test_engaging_runs_the_kernel_at_ring_1_on_the_shadow_tables(rig) -> None:
    rig, engine = rig
    state = rig.vcpu.context.load()
    assert state.cpl == 1
    assert state.segment(Seg.CS).selector == SEL_CODE32 | 1
    assert state.segment(Seg.SS).selector == SEL_DATA32 | 1
    assert state.segment(Seg.DS).limit == shadow.WINDOW_BASE - 1
    assert state.table("gdt").base == shadow.WINDOW_BASE
    assert state.table("tr").selector == shadow.VMM_TSS_SELECTOR
    assert engine.virtual.gdt.base == GDT and engine.virtual.idt.base == IDT
    assert rig.get("rflags") & (1 << 9)                     # the VMM's interrupts stay on
    assert not engine.virtual.interrupts_enabled            # the guest's IF was 0


def test_cli_and_sti_change_only_the_virtual_if(rig) -> None:
    rig, engine = rig
    insn, outcome = _trap(rig, engine, "sti")
    assert isinstance(outcome, Resume) and rig.vcpu.rip == insn.next_address
    assert engine.virtual.interrupts_enabled
    assert rig.vcpu.context.load().interrupt_shadow           # STI blocks for one instruction
    insn, _ = _trap(rig, engine, "cli")
    assert not engine.virtual.interrupts_enabled and rig.get("rflags") & (1 << 9)


def test_out_reaches_the_device_through_the_io_routine(rig) -> None:
    rig, engine = rig
    rig.set(eax=ord("Z"))
    insn, outcome = _trap(rig, engine, "out 0xe9, al")     # no device: open bus, still emulated
    assert isinstance(outcome, Resume) and rig.vcpu.rip == insn.next_address
    rig.set(eax=0x41, edx=0x3F8)
    _trap(rig, engine, "out dx, al")
    assert rig.serial == bytearray(b"A")
    assert engine.counters.emulated == {"out": 2}


def test_mov_to_cr0_is_virtual_and_real_cr0_keeps_ne(rig) -> None:
    rig, engine = rig
    rig.set(eax=0x11)
    _trap(rig, engine, "mov cr0, eax")
    assert engine.virtual.cr0 == 0x11 and rig.get("cr0") & 0x31 == 0x31
    rig.set(ebx=0)
    _trap(rig, engine, "mov ebx, cr0")
    assert rig.get("ebx") == 0x11


def test_lgdt_refreshes_the_shadow_copy(rig) -> None:
    rig, engine = rig
    new_gdt = 0x5000
    rig.poke(new_gdt, struct.pack("<QQQ", 0, CODE32, DATA32))
    rig.poke(0x6000, struct.pack("<HI", 23, new_gdt))
    _trap(rig, engine, "lgdt [0x6000]")
    assert (engine.virtual.gdt.base, engine.virtual.gdt.limit) == (new_gdt, 23)
    copy = rig.vcpu.read_linear(shadow.WINDOW_BASE + 8, 8)    # through the VMM window
    assert int.from_bytes(copy, "little") == shadow.compress(CODE32)


def test_iret_to_ring_0_is_emulated_and_restores_the_virtual_if(rig) -> None:
    rig, engine = rig
    rig.poke(STACK, struct.pack("<III", 0x12345, SEL_CODE32, 0x202))  # EIP, CS RPL 0, IF
    insn, outcome = _trap(rig, engine, "iretd", error=SEL_CODE32)
    assert rig.vcpu.rip == 0x12345 and rig.get("esp") == STACK + 12
    assert rig.vcpu.context.load().segment(Seg.CS).selector == SEL_CODE32 | 1
    assert engine.virtual.interrupts_enabled


def test_int_through_a_dpl0_gate_is_delivered_with_a_bare_metal_frame(rig) -> None:
    rig, engine = rig
    rig.idt_gate32(0x40, HANDLER)
    insn = rig.place("int 0x40")
    exit = VmExit(ExitReason.EXCEPTION_OR_NMI, insn.next_address,
                  interruption=InterruptionInfo.exception(13, error_code=True),
                  interruption_error=(0x40 << 3) | 2,
                  idt_vectoring=InterruptionInfo(0x40, InterruptionType.SOFTWARE_INTERRUPT))
    rig.vcpu.rip = insn.next_address
    engine.on_exception(exit)
    assert rig.vcpu.rip == HANDLER
    eip, cs, eflags = struct.unpack("<III", rig.peek(STACK - 12, 12))
    assert (eip, cs, eflags & (1 << 9)) == (insn.next_address, SEL_CODE32, 0)   # RPL 0, virtual IF
    assert rig.vcpu.context.load().cpl == 1


def test_hlt_with_interrupts_enabled_and_none_pending_halts(rig) -> None:
    rig, engine = rig
    engine.virtual.interrupts_enabled = True
    insn, outcome = _trap(rig, engine, "hlt")
    assert isinstance(outcome, Halt) and rig.vcpu.rip == insn.next_address


def test_a_genuine_gp_is_reflected_to_the_guest_handler(rig) -> None:
    rig, engine = rig
    rig.idt_gate32(13, HANDLER)
    insn, outcome = _trap(rig, engine, "mov ds, ax", error=0x50)   # not an emulated instruction
    assert rig.vcpu.rip == HANDLER
    error, eip, cs = struct.unpack("<III", rig.peek(STACK - 16, 12))
    assert (error, eip, cs) == (0x50, insn.address, SEL_CODE32)
    assert engine.counters.reflected == 1


def test_enabling_long_mode_ends_with_the_documented_outcome(rig) -> None:
    rig, engine = rig
    rig.set(ecx=0xC0000080, eax=1 << 8, edx=0)
    _, outcome = _trap(rig, engine, "wrmsr")
    assert isinstance(outcome, Shutdown)
    assert "deprivileged mode runs 32-bit protected-mode kernels" in outcome.reason


def test_segments_that_cannot_end_below_the_window_are_not_present() -> None:
    expand_down = 0x00C09600_0000FFFF                 # data, expand-down, DPL 0
    in_window = 0xFF409200_0000FFFF | (0xC0 << 32)    # base FFC00000h
    assert not shadow.compress(expand_down) & shadow.DESC_P
    assert not shadow.compress(in_window) & shadow.DESC_P


def test_the_vmm_cannot_be_made_to_write_its_window_for_the_guest(rig) -> None:
    """A string instruction whose operand points into the window (the VMM emulates it with
    its own accesses) must not reach the shadow tables."""
    rig, engine = rig
    assert rig.vcpu.read_linear(shadow.WINDOW_BASE + 8, 8)          # readable: delivery
    with pytest.raises(TranslationFault):
        rig.vcpu.translate(shadow.WINDOW_BASE + 8, MemoryAccess.WRITE)


def test_user_code_int_through_a_dpl3_gate_lands_on_the_kernel_stack_at_ring_1() -> None:
    """Native delivery through the shadow IDT from CPL 3: the VMM's TSS gives the guest's
    ring-0 stack as the ring-1 stack; the handler runs at CPL 1 with the kernel's CS, RPL 1."""
    from tests.unit.hv.fakes import SEL_UCODE32, SEL_UDATA32, TSS, run
    from vtemu.modes.deprivileged import configure
    rig = Rig()
    rig.protected_mode()
    kernel_stack, user_stack, user_code = 0xA000, 0xC000, 0x11000
    rig.poke(TSS + 4, struct.pack("<II", kernel_stack, SEL_DATA32))    # ESP0, SS0
    rig.idt_gate32(0x80, HANDLER, dpl=3)
    rig.poke(HANDLER, bytes([0xF4]))                                    # the handler halts
    rig.poke(user_code, bytes([0xCD, 0x80]))                            # int 0x80
    rig.poke(STACK, struct.pack("<IIIII", user_code, SEL_UCODE32, 0x202, user_stack, SEL_UDATA32))
    rig.set(esp=STACK, rflags=0x2)
    configure(rig.cpu, rig.partition)
    engine = rig.cpu.mode_engine
    engine.engage()
    insn = rig.place("iretd")                                           # kernel -> user, emulated
    engine.on_exception(_gp(rig, SEL_UCODE32))
    assert rig.vcpu.context.load().cpl == 3 and rig.vcpu.rip == user_code
    run(rig, max_slices=3)
    state = rig.vcpu.context.load()
    assert state.cpl == 1 and rig.vcpu.rip == HANDLER + 1               # HLT trapped, emulated
    assert engine.counters.emulated["hlt"] == 1
    assert state.segment(Seg.SS).selector == SEL_DATA32 | 1
    frame = struct.unpack("<IIIII", rig.peek(kernel_stack - 20, 20))
    assert frame == (user_code + 2, SEL_UCODE32, 0x202, user_stack, SEL_UDATA32)
    assert state.segment(Seg.CS).selector == SEL_CODE32 | 1
    assert insn.size == 1
