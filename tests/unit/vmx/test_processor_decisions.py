"""The VMX processor's decisions on a running guest: tiny code placed in a real partition's RAM
and run by its VmxCpu (no firmware; the rig's register state is the guest state at the first VM
entry), with the VMCS changed by the test or by a handler the test installs. Each test checks
which exits happen, where, and what the guest sees."""

from __future__ import annotations

import struct
from typing import Callable

import pytest
import unicorn.x86_const as U

from tests.unit.hv.fakes import (CODE, DATA, IDT, SEL_CODE32, SEL_DATA32, TSS, RecordingPortDevice,
                                 Rig, assemble, run)
from vtemu.hv.handlers.common import done
from vtemu.hv.outcome import RESUME, RunEnd
from vtemu.machine.cpustate import Seg
from vtemu.machine.decode import CodeMode
from vtemu.vmx.controls import EntryControls, ExitControls, PinBasedControls as Pin
from vtemu.vmx.controls import PrimaryProcessorControls as P
from vtemu.vmx.controls import SecondaryProcessorControls as S
from vtemu.vmx.exit import VmExit
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.interruption import InterruptionInfo, InterruptionType
from vtemu.vmx.qualifications import IoDirection, IoQualification
from vtemu.vmx.reasons import ExitReason

MARK = 0xE9                 # a port no device claims: the guest's "now, hypervisor" signal
HANDLER = 0x11000           # guest interrupt/exception handlers live here
RESULT = DATA               # where guest handlers leave what they saw
RFLAGS_IF = 1 << 9
STACK0 = 0x9000


def _reasons(rig: Rig) -> list[ExitReason]:
    return [exit.reason for exit, _ in rig.outcomes]


def _exits(rig: Rig, reason: ExitReason) -> list[VmExit]:
    return [exit for exit, _ in rig.outcomes if exit.reason is reason]


def _on_mark(rig: Rig, action: Callable[[VmExit], None]) -> None:
    """Run `action` when the guest writes port E9h (then the OUT completes as usual)."""
    original = rig.partition.handlers[ExitReason.IO_INSTRUCTION]

    def handler(exit, cpu, partition):  # type: ignore[no-untyped-def]
        if IoQualification.decode(exit.qualification).port == MARK:
            action(exit)
        return original(exit, cpu, partition)
    rig.partition.handlers[ExitReason.IO_INSTRUCTION] = handler


def _set_control(rig: Rig, field: F, bits: int, on: bool = True) -> None:
    value = rig.cpu.vmcs.read(field)
    rig.cpu.vmcs.write(field, value | bits if on else value & ~bits)


def _handler(rig: Rig, vector: int, code: str, dpl: int = 0) -> None:
    """A 32-bit interrupt-gate handler for `vector` at HANDLER + 0x100 * n."""
    address = HANDLER + 0x100 * (vector & 0xF)
    rig.poke(address, assemble(code, address, CodeMode.BITS32))
    rig.idt_gate32(vector, address, dpl=dpl)


def _handler64(rig: Rig, vector: int, code: str) -> None:
    address = HANDLER + 0x100 * (vector & 0xF)
    rig.poke(address, assemble(code, address, CodeMode.BITS64))
    rig.idt_gate64(vector, address)


def _bitmap_page(rig: Rig, fill: int = 0) -> int:
    hpa = rig.partition.memory.allocator.alloc_table_page()
    rig.partition.host.write(hpa, bytes([fill]) * 4096)
    return hpa


@pytest.fixture
def rig() -> Rig:
    rig = Rig()
    rig.protected_mode()
    return rig


# --- I/O and MSR bitmaps on a running guest --------------------------------------------------

def test_io_bitmap_lets_clear_ports_through_and_exits_on_a_straddled_set_bit(rig: Rig) -> None:
    device = RecordingPortDevice(reads=[0x11, 0x2222], default=0)
    rig.partition.ports.attach("dummy", 0x500, 4, device, byte_wide=False)
    bitmap_a = _bitmap_page(rig)
    rig.partition.host.write(bitmap_a + (0x501 >> 3), bytes([1 << (0x501 & 7)]))
    rig.cpu.vmcs.write(F.IO_BITMAP_A, bitmap_a)
    rig.cpu.vmcs.write(F.IO_BITMAP_B, _bitmap_page(rig))
    run(rig, "mov dx, 0x500; in al, dx; mov bl, al; in ax, dx; hlt")
    io = _exits(rig, ExitReason.IO_INSTRUCTION)
    assert len(io) == 1                             # only IN AX touches the set bit (501h)
    assert IoQualification.decode(io[0].qualification) == IoQualification(2, IoDirection.IN, port=0x500)
    assert device.reads == [(0, 1), (0, 2)]         # both reached the device
    assert (rig.get("rbx") & 0xFF, rig.get("rax") & 0xFFFF) == (0x11, 0x2222)


def test_msr_bitmap_lets_a_read_run_natively_and_exits_on_the_write(rig: Rig) -> None:
    bitmap = _bitmap_page(rig, fill=0xFF)
    rig.partition.host.write(bitmap + (0x174 >> 3), bytes([0xFF & ~(1 << (0x174 & 7))]))
    rig.cpu.vmcs.write(F.MSR_BITMAP, bitmap)
    rig.vcpu.write_msr(0x174, 0x08)
    run(rig, "mov ecx, 0x174; rdmsr; mov ebx, eax; mov eax, 0x10; xor edx, edx; wrmsr; hlt")
    assert _reasons(rig) == [ExitReason.WRMSR, ExitReason.HLT]
    assert rig.get("rbx") == 0x08                    # RDMSR ran with native semantics
    assert rig.vcpu.read_msr(0x174) == 0x10          # WRMSR was performed by the hypervisor


def test_unknown_msr_read_through_a_clear_bitmap_bit_raises_gp_in_the_guest(rig: Rig) -> None:
    """No exit and no hypervisor: the processor's own #GP(0) reaches the guest IDT."""
    rig.cpu.vmcs.write(F.MSR_BITMAP, _bitmap_page(rig))
    _handler(rig, 13, f"mov eax, [esp]; mov [{RESULT:#x}], eax; mov eax, [esp + 4]; "
                      f"mov [{RESULT + 4:#x}], eax; hlt")
    run(rig, "mov ecx, 0x1234; rdmsr; hlt")
    assert _reasons(rig) == [ExitReason.HLT]
    assert (rig.u32(RESULT), rig.u32(RESULT + 4)) == (0, CODE + 5)   # error code 0, EIP of RDMSR


def test_rdtsc_without_exiting_is_guest_time_plus_the_offset(rig: Rig) -> None:
    """One instruction is one nanosecond of guest time: the second RDTSC is six later."""
    rig.cpu.vmcs.write(F.TSC_OFFSET, 1 << 40)
    run(rig, "rdtsc; mov esi, eax; mov edi, edx; nop; nop; nop; rdtsc; hlt")
    first = (rig.get("rdi") << 32) | rig.get("rsi")
    second = (rig.get("rdx") << 32) | rig.get("rax")
    assert first >> 40 == 1 and second - first == 6
    assert ExitReason.RDTSC not in _reasons(rig)


def test_rdmsr_tsc_through_the_bitmap_adds_the_tsc_offset(rig: Rig) -> None:
    rig.cpu.vmcs.write(F.MSR_BITMAP, _bitmap_page(rig))
    rig.cpu.vmcs.write(F.TSC_OFFSET, 1 << 40)
    run(rig, "rdtsc; mov esi, eax; mov edi, edx; mov ecx, 0x10; rdmsr; hlt")
    assert ExitReason.RDMSR not in _reasons(rig)
    rdtsc = (rig.get("rdi") << 32) | rig.get("rsi")
    rdmsr = (rig.get("rdx") << 32) | rig.get("rax")
    assert rdmsr - rdtsc == 4


def _capture_exit_fields(rig: Rig, reason: ExitReason, *fields: F) -> list[dict[F, int]]:
    """The VMCS exit-information fields as the hypervisor reads them while handling `reason`."""
    seen: list[dict[F, int]] = []
    original = rig.partition.handlers[reason]

    def handler(exit, cpu, partition):  # type: ignore[no-untyped-def]
        seen.append({field: cpu.vmcs.read(field) for field in fields})
        return original(exit, cpu, partition)
    rig.partition.handlers[reason] = handler
    return seen


def test_io_exit_information_fields(rig: Rig) -> None:
    seen = _capture_exit_fields(rig, ExitReason.IO_INSTRUCTION, F.EXIT_REASON, F.EXIT_QUALIFICATION,
                                F.VM_EXIT_INSTRUCTION_LEN, F.GUEST_RIP)
    run(rig, "mov dx, 0x600; in ax, dx; out 0x70, al; hlt")
    assert seen == [
        {F.EXIT_REASON: 30, F.EXIT_QUALIFICATION: IoQualification(2, IoDirection.IN, port=0x600).encode(),
         F.VM_EXIT_INSTRUCTION_LEN: 2, F.GUEST_RIP: CODE + 4},
        {F.EXIT_REASON: 30,
         F.EXIT_QUALIFICATION: IoQualification(1, IoDirection.OUT, immediate=True, port=0x70).encode(),
         F.VM_EXIT_INSTRUCTION_LEN: 2, F.GUEST_RIP: CODE + 6},
    ]


def test_outs_exit_reports_instruction_information_and_the_linear_address(rig: Rig) -> None:
    from vtemu.vmx.qualifications import AddressSize, InsOutsInfo, SegmentRegister
    assert rig.cpu.caps.ins_outs_info
    rig.load_segment(Seg.FS, 0x10, 0x7000, 0xFFFFFFFF)
    seen = _capture_exit_fields(rig, ExitReason.IO_INSTRUCTION, F.VMX_INSTRUCTION_INFO,
                                F.GUEST_LINEAR_ADDRESS)
    rig.set(rsi=DATA, rcx=2, rdx=0x600)
    run(rig, bytes.fromhex("64 f3 6f f4"))          # rep outsd fs:[esi]; hlt
    assert InsOutsInfo.decode(seen[0][F.VMX_INSTRUCTION_INFO]) == InsOutsInfo(AddressSize.BITS32,
                                                                              SegmentRegister.FS)
    assert seen[0][F.GUEST_LINEAR_ADDRESS] == 0x7000 + DATA


def test_io_permission_fault_comes_before_the_io_exit() -> None:
    """CPL 3 > IOPL 0 and a port beyond the TSS I/O bitmap: #GP(0), no I/O exit (SDM 25.1.1)."""
    rig = Rig()
    _ring3(rig)
    rig.poke(TSS + 0x66, struct.pack("<H", 0x68))    # I/O map base = limit + 1: no bitmap
    run(rig, "out 0x80, al; hlt", stack=0xA000)
    assert _reasons(rig) == [ExitReason.HLT]
    assert (rig.u32(RESULT), rig.u32(RESULT + 4)) == (0, CODE)


def test_io_at_cpl3_with_iopl3_exits() -> None:
    rig = Rig()
    _ring3(rig)
    rig.set(rflags=0x2 | (3 << 12), rax=0x5A)
    run(rig, "out 0x80, al; hlt", stack=0xA000)
    assert _reasons(rig)[:1] == [ExitReason.IO_INSTRUCTION]
    assert rig.partition.post.last_code == 0x5A
    assert rig.u32(RESULT + 4) == CODE + 2            # then the ring-3 HLT faults


def test_descriptor_table_exit_information(rig: Rig) -> None:
    from vtemu.vmx.qualifications import (AddressSize, DescriptorTableInfo, DescriptorTableInstruction,
                                          Gpr, MemoryOperand, SegmentRegister)
    _set_control(rig, F.SECONDARY_VM_EXEC_CONTROL, S.DESCRIPTOR_TABLE_EXITING)
    seen = _capture_exit_fields(rig, ExitReason.GDTR_IDTR_ACCESS, F.EXIT_QUALIFICATION,
                                F.VMX_INSTRUCTION_INFO)
    rig.set(rbx=DATA, rsi=2)
    rig.poke(DATA + 0x20 + 8, struct.pack("<HI", 0x7FF, 0x2000))
    run(rig, bytes.fromhex("0f 01 5c b3 20 f4"))       # lidt [ebx + esi*4 + 0x20]; hlt
    assert seen[0][F.EXIT_QUALIFICATION] == 0x20        # the displacement
    operand = MemoryOperand(AddressSize.BITS32, SegmentRegister.DS, base=Gpr.RBX, index=Gpr.RSI, scaling=2)
    assert DescriptorTableInfo.decode(seen[0][F.VMX_INSTRUCTION_INFO]) == DescriptorTableInfo(
        operand, DescriptorTableInstruction.LIDT, operand_size_32=True)
    assert rig.vcpu.engine.uc.reg_read(U.UC_X86_REG_IDTR)[1:3] == (0x2000, 0x7FF)


def test_exits_record_the_instructions_retired_before_them(rig: Rig) -> None:
    rig.partition.clock.schedule(1 << 50, lambda: None)     # guest time is live: slices count
    run(rig, f"nop; nop; nop; out {MARK:#x}, al; nop; nop; out {MARK:#x}, al; hlt")
    marks = [exit.instructions for exit in _exits(rig, ExitReason.IO_INSTRUCTION)]
    assert marks == [3, 6]


# --- control registers -----------------------------------------------------------------------

def test_mov_from_cr0_and_smsw_read_owned_bits_from_the_shadow(rig: Rig) -> None:
    rig.cpu.vmcs.write(F.CR0_GUEST_HOST_MASK, 0x8 | 0x4)     # TS, EM owned
    rig.cpu.vmcs.write(F.CR0_READ_SHADOW, 0x8)                # the guest believes TS = 1, EM = 0
    rig.set(cr0=0x11 | 0x4)                                   # real: EM = 1, TS = 0
    run(rig, "mov eax, cr0; smsw bx; hlt")
    assert rig.get("rax") & 0xFFFF == 0x11 | 0x8
    assert rig.get("rbx") & 0xFFFF == 0x11 | 0x8
    assert _reasons(rig) == [ExitReason.HLT]
    assert rig.get("cr0") & 0xFFFF == 0x11 | 0x4


def test_cr0_write_exits_only_when_an_owned_bit_changes(rig: Rig) -> None:
    rig.cpu.vmcs.write(F.CR0_GUEST_HOST_MASK, 0x8)
    rig.cpu.vmcs.write(F.CR0_READ_SHADOW, 0)
    run(rig, "mov eax, cr0; or eax, 0x2; mov cr0, eax; or eax, 0x8; mov cr0, eax; hlt")
    cr = _exits(rig, ExitReason.CR_ACCESS)
    assert len(cr) == 1 and cr[0].guest_rip == CODE + 12   # the second MOV (sets TS)
    assert rig.get("cr0") & 0xF == 0xB and rig.cpu.vmcs.read(F.CR0_READ_SHADOW) == 0x8


def test_cr3_target_values_do_not_exit(rig: Rig) -> None:
    _set_control(rig, F.CPU_BASED_VM_EXEC_CONTROL, P.CR3_LOAD_EXITING)
    rig.cpu.vmcs.write(F.CR3_TARGET_COUNT, 1)
    rig.cpu.vmcs.write(F.CR3_TARGET_VALUE0, 0x5000)
    run(rig, "mov eax, 0x5000; mov cr3, eax; mov eax, 0x6000; mov cr3, eax; hlt")
    cr = _exits(rig, ExitReason.CR_ACCESS)
    assert [exit.guest_rip for exit in cr] == [CODE + 13]
    assert rig.get("cr3") == 0x6000


def test_mov_to_cr8_is_the_tpr_and_exits_with_cr8_load_exiting() -> None:
    rig = Rig()
    rig.long_mode()
    run(rig, "mov eax, 5; mov cr8, rax; mov rbx, cr8; hlt")
    assert rig.vcpu.tpr == 5 and rig.get("rbx") == 5
    assert [e.guest_rip for e in _exits(rig, ExitReason.CR_ACCESS)] == [CODE + 5, CODE + 9]


def test_mov_to_cr8_reserved_bits_fault_without_cr8_exiting() -> None:
    rig = Rig()
    rig.long_mode()
    _set_control(rig, F.CPU_BASED_VM_EXEC_CONTROL, P.CR8_LOAD_EXITING | P.CR8_STORE_EXITING, on=False)
    _handler64(rig, 13, f"pop rax; mov [{RESULT:#x}], eax; pop rax; mov [{RESULT + 4:#x}], eax; hlt")
    rig.poke(RESULT, b"\xff" * 8)
    rig.vcpu.tpr = 3
    run(rig, "mov eax, 0x13; mov cr8, rax; hlt")
    assert (rig.u32(RESULT), rig.u32(RESULT + 4)) == (0, CODE + 5)
    assert rig.vcpu.tpr == 3


def test_mov_cr8_without_cr8_exiting_reads_and_writes_the_tpr() -> None:
    rig = Rig()
    rig.long_mode()
    _set_control(rig, F.CPU_BASED_VM_EXEC_CONTROL, P.CR8_LOAD_EXITING | P.CR8_STORE_EXITING, on=False)
    run(rig, "mov eax, 0xb; mov cr8, rax; xor ebx, ebx; mov rbx, cr8; hlt")
    assert rig.vcpu.tpr == 0xB and rig.get("rbx") == 0xB
    assert _reasons(rig) == [ExitReason.HLT]


# --- exceptions ------------------------------------------------------------------------------

def _pf_guest(rig: Rig) -> None:
    _handler(rig, 14, f"pop eax; mov [{RESULT:#x}], eax; mov eax, cr2; mov [{RESULT + 4:#x}], eax; hlt")


def test_string_io_let_through_by_the_bitmap_faults_natively_mid_instruction() -> None:
    """REP OUTSB on a clear bitmap bit runs without an exit; its #PF on the missing page is
    the processor's own: delivered to the guest handler with CR2 at the faulting element, no
    stale injection left behind, and the completed iterations retired."""
    rig = Rig()
    rig.paging32(missing=(0x50000,))
    device = RecordingPortDevice()
    rig.partition.ports.attach("dummy", 0x500, 1, device)
    rig.cpu.vmcs.write(F.IO_BITMAP_A, _bitmap_page(rig))
    rig.cpu.vmcs.write(F.IO_BITMAP_B, _bitmap_page(rig))
    rig.poke(0x4FFFE, b"ok")
    _pf_guest(rig)
    rig.set(rsi=0x4FFFE, rcx=4, rdx=0x500)
    run(rig, "rep outsb; hlt")
    assert ExitReason.IO_INSTRUCTION not in _reasons(rig)
    assert [value for _, _, value in device.writes] == [ord("o"), ord("k")]
    assert (rig.u32(RESULT), rig.u32(RESULT + 4)) == (0x0, 0x50000)
    assert (rig.get("rsi"), rig.get("rcx")) == (0x50000, 2)
    assert not rig.cpu.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) >> 31


@pytest.mark.parametrize(("bit14", "write", "exits"), [
    (True, True, True), (True, False, False), (False, True, False), (False, False, True),
])
def test_page_fault_mask_and_match_on_a_running_guest(bit14: bool, write: bool, exits: bool) -> None:
    """Mask P|W, match W (a write to a not-present page): SDM 25.2 with both bit-14 settings.
    Either way the guest's #PF handler runs with the right error code and CR2."""
    rig = Rig()
    rig.paging32(missing=(0x50000,))
    rig.cpu.vmcs.write(F.EXCEPTION_BITMAP, (1 << 14) if bit14 else 0)
    rig.cpu.vmcs.write(F.PAGE_FAULT_ERROR_CODE_MASK, 0x3)
    rig.cpu.vmcs.write(F.PAGE_FAULT_ERROR_CODE_MATCH, 0x2)
    _pf_guest(rig)
    access = "mov dword ptr [0x50010], eax" if write else "mov eax, dword ptr [0x50010]"
    run(rig, f"{access}; hlt")
    pf = _exits(rig, ExitReason.EXCEPTION_OR_NMI)
    assert len(pf) == int(exits)
    if exits:
        assert pf[0].guest_rip == CODE and pf[0].qualification == 0x50010
        assert pf[0].interruption == InterruptionInfo.exception(14, error_code=True)
        assert pf[0].interruption_error == (0x2 if write else 0x0)
    assert (rig.u32(RESULT), rig.u32(RESULT + 4)) == (0x2 if write else 0x0, 0x50010)


@pytest.mark.parametrize(("vector", "code", "kind"), [
    (3, "int3", InterruptionType.SOFTWARE_EXCEPTION),
    (1, "int1", InterruptionType.PRIVILEGED_SOFTWARE_EXCEPTION),
])
def test_one_byte_software_exception_exits_with_its_length_and_is_reflected(
        rig: Rig, vector: int, code: str, kind: InterruptionType) -> None:
    rig.cpu.vmcs.write(F.EXCEPTION_BITMAP, 1 << vector)
    _handler(rig, vector, f"mov eax, [esp]; mov [{RESULT:#x}], eax; hlt")
    run(rig, f"nop; {code}; nop; hlt")
    exits = _exits(rig, ExitReason.EXCEPTION_OR_NMI)
    assert len(exits) == 1 and exits[0].guest_rip == CODE + 1 and exits[0].instruction_length == 1
    assert exits[0].interruption == InterruptionInfo(vector, kind)
    assert rig.u32(RESULT) == CODE + 2                # reflected: the return address is after it


def test_int_n_never_consults_the_exception_bitmap_but_into_does(rig: Rig) -> None:
    """CD 03 is INT n (a software interrupt): no exit even with bit 3 set. INTO (CE) with OF = 1
    is a software exception: it exits, with instruction length 1 (SDM 25.2, 27.2.5)."""
    rig.cpu.vmcs.write(F.EXCEPTION_BITMAP, (1 << 3) | (1 << 4))
    _handler(rig, 3, f"mov eax, [esp]; mov [{RESULT:#x}], eax; iretd")
    _handler(rig, 4, f"mov eax, [esp]; mov [{RESULT + 4:#x}], eax; iretd")
    run(rig, bytes.fromhex("cd 03") + assemble("mov al, 0x7f; add al, 1; into; hlt", CODE + 2, CodeMode.BITS32))
    #        int 3 (CD form) at 0; mov 2; add 4; into 6; hlt 7
    exits = _exits(rig, ExitReason.EXCEPTION_OR_NMI)
    assert len(exits) == 1 and exits[0].guest_rip == CODE + 6 and exits[0].instruction_length == 1
    assert exits[0].interruption == InterruptionInfo(4, InterruptionType.SOFTWARE_EXCEPTION)
    assert (rig.u32(RESULT), rig.u32(RESULT + 4)) == (CODE + 2, CODE + 7)


def test_int1_is_a_debug_exception_not_an_invalid_opcode(rig: Rig) -> None:
    _handler(rig, 1, f"mov eax, [esp]; mov [{RESULT:#x}], eax; hlt")
    _handler(rig, 6, f"mov eax, [esp]; mov [{RESULT + 4:#x}], eax; hlt")
    rig.poke(RESULT, b"\xff" * 8)
    run(rig, "nop; int1; hlt")
    assert (rig.u32(RESULT), rig.u32(RESULT + 4)) == (CODE + 2, 0xFFFF_FFFF)


def test_fault_during_event_delivery_exits_with_idt_vectoring_information(rig: Rig) -> None:
    rig.cpu.vmcs.write(F.EXCEPTION_BITMAP, 1 << 11)
    _handler(rig, 11, f"pop eax; mov [{RESULT:#x}], eax; hlt")
    rig.poke(IDT + 8 * 0x40, struct.pack("<II", (SEL_CODE32 << 16) | 0x2000, 0x0E00))   # P = 0
    _on_mark(rig, lambda exit: rig.cpu.inject(InterruptionInfo.external_interrupt(0x40)))
    rig.set(rflags=0x2 | RFLAGS_IF)
    run(rig, f"out {MARK:#x}, al; nop; hlt")
    np = _exits(rig, ExitReason.EXCEPTION_OR_NMI)
    assert len(np) == 1
    assert np[0].interruption == InterruptionInfo.exception(11, error_code=True)
    assert np[0].interruption_error == (0x40 << 3) | 2 | 1          # IDT, EXT
    assert np[0].idt_vectoring == InterruptionInfo.external_interrupt(0x40)


# --- VM-entry event injection ----------------------------------------------------------------

def test_injected_software_interrupt_returns_past_vm_entry_instruction_length(rig: Rig) -> None:
    """At the mark, the hypervisor completes the OUT and injects INT 40h with an instruction
    length of 2: the handler's return address is RIP + 2 (SDM 26.5.1.1)."""
    def inject(exit: VmExit) -> None:
        rig.cpu.inject(InterruptionInfo(0x40, InterruptionType.SOFTWARE_INTERRUPT), instruction_length=2)
    _on_mark(rig, inject)
    _handler(rig, 0x40, f"mov eax, [esp]; mov [{RESULT:#x}], eax; mov eax, [esp + 4]; "
                        f"mov [{RESULT + 4:#x}], eax; hlt")
    run(rig, f"out {MARK:#x}, al; nop; nop; nop; hlt")
    assert (rig.u32(RESULT), rig.u32(RESULT + 4)) == (CODE + 2 + 2, SEL_CODE32)
    assert rig.cpu.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) == 0     # consumed by the entry


def test_injected_hardware_exception_returns_to_rip(rig: Rig) -> None:
    def inject(exit: VmExit) -> None:
        rig.cpu.inject(InterruptionInfo.exception(13, error_code=True), 0x1234, instruction_length=2)
    _on_mark(rig, inject)
    _handler(rig, 13, f"pop eax; mov [{RESULT:#x}], eax; mov eax, [esp]; mov [{RESULT + 4:#x}], eax; hlt")
    run(rig, f"out {MARK:#x}, al; nop; hlt")
    assert (rig.u32(RESULT), rig.u32(RESULT + 4)) == (0x1234, CODE + 2)


# --- interrupts ------------------------------------------------------------------------------

def test_interrupt_window_exit_comes_after_the_instruction_following_sti(rig: Rig) -> None:
    """Interrupt-window exiting set while IF = 0: no exit until STI and the instruction after it
    (blocking by STI) have executed (SDM 26.7.5, 24.4.2)."""
    _on_mark(rig, lambda exit: _set_control(rig, F.CPU_BASED_VM_EXEC_CONTROL, P.INTERRUPT_WINDOW_EXITING))
    code = f"cli; out {MARK:#x}, al; nop; inc eax; sti; inc ebx; inc ecx; nop; hlt"
    #        0    1                3    4        5    6        7        8    9
    rig.set(rax=0, rbx=0, rcx=0)
    run(rig, code)
    window = _exits(rig, ExitReason.INTERRUPT_WINDOW)
    assert [exit.guest_rip for exit in window] == [CODE + 7]
    assert not rig.cpu.vmcs.read(F.CPU_BASED_VM_EXEC_CONTROL) & P.INTERRUPT_WINDOW_EXITING
    assert _reasons(rig)[-1] is ExitReason.HLT


def test_external_interrupt_exit_acknowledges_and_the_hypervisor_injects(rig: Rig) -> None:
    rig.init_pic(base=0x20)
    _handler(rig, 0x23, f"mov eax, [esp]; mov [{RESULT:#x}], eax; hlt")
    _on_mark(rig, lambda exit: rig.raise_irq(3))
    rig.set(rflags=0x2 | RFLAGS_IF)
    run(rig, f"out {MARK:#x}, al; nop; nop; hlt")
    external = _exits(rig, ExitReason.EXTERNAL_INTERRUPT)
    assert len(external) == 1 and external[0].guest_rip == CODE + 2
    assert external[0].interruption == InterruptionInfo.external_interrupt(0x23)
    assert rig.u32(RESULT) == CODE + 2


def test_external_interrupt_while_if_is_clear_waits_for_the_window(rig: Rig) -> None:
    rig.init_pic(base=0x20)
    _handler(rig, 0x23, f"mov eax, [esp]; mov [{RESULT:#x}], eax; hlt")
    _on_mark(rig, lambda exit: rig.raise_irq(3))
    run(rig, f"cli; out {MARK:#x}, al; nop; nop; sti; nop; nop; hlt")
    #        0    1                3    4    5    6    7    8
    assert _reasons(rig)[:3] == [ExitReason.IO_INSTRUCTION, ExitReason.EXTERNAL_INTERRUPT,
                                 ExitReason.INTERRUPT_WINDOW]
    assert _exits(rig, ExitReason.INTERRUPT_WINDOW)[0].guest_rip == CODE + 7
    assert rig.u32(RESULT) == CODE + 7


def test_sti_hlt_idle_wakes_on_an_interrupt_and_returns_after_hlt(rig: Rig) -> None:
    """The classic idle loop: HLT exits and the vCPU blocks (no interrupt yet); an IRQ wakes it,
    the external-interrupt exit queues the vector and it is injected with the return address
    after the HLT."""
    rig.init_pic(base=0x20)
    _handler(rig, 0x23, f"mov eax, [esp]; mov [{RESULT:#x}], eax; hlt")
    run(rig, "sti; hlt; nop; hlt")
    assert _reasons(rig) == [ExitReason.HLT] and rig.cpu.blocked
    assert not rig.cpu.can_wake()
    rig.raise_irq(3)
    assert rig.cpu.can_wake()
    run(rig)
    assert _reasons(rig)[:2] == [ExitReason.HLT, ExitReason.EXTERNAL_INTERRUPT]
    assert rig.u32(RESULT) == CODE + 2


def _without_interrupt_exiting(rig: Rig) -> None:
    _set_control(rig, F.PIN_BASED_VM_EXEC_CONTROL, Pin.EXTERNAL_INTERRUPT_EXITING, on=False)
    _set_control(rig, F.VM_EXIT_CONTROLS, 1 << 15, on=False)   # acknowledge interrupt on exit
    rig.init_pic(base=0x20)
    _handler(rig, 0x23, f"mov eax, [esp]; mov [{RESULT:#x}], eax; hlt")


def test_without_external_interrupt_exiting_intr_goes_through_the_guest_idt(rig: Rig) -> None:
    _without_interrupt_exiting(rig)
    rig.raise_irq(3)
    rig.set(rflags=0x2 | RFLAGS_IF)
    run(rig, "nop; nop; hlt")
    assert ExitReason.EXTERNAL_INTERRUPT not in _reasons(rig)
    assert rig.u32(RESULT) == CODE                   # delivered before the first instruction
    assert not rig.partition.pic.intr_asserted()     # the processor acknowledged the PIC


def test_without_external_interrupt_exiting_sti_opens_the_window(rig: Rig) -> None:
    _without_interrupt_exiting(rig)
    rig.raise_irq(3)
    run(rig, "cli; nop; sti; nop; nop; nop; hlt")
    #        0    1    2    3    4    5    6
    assert rig.u32(RESULT) == CODE + 4               # after STI and the instruction that follows


# --- the VMX-preemption timer ----------------------------------------------------------------

def test_preemption_timer_exits_after_value_times_2_to_the_rate_instructions(rig: Rig) -> None:
    _set_control(rig, F.PIN_BASED_VM_EXEC_CONTROL, Pin.ACTIVATE_PREEMPTION_TIMER)
    rig.cpu.vmcs.write(F.VMX_PREEMPTION_TIMER_VALUE, 10)
    rig.partition.handlers[ExitReason.PREEMPTION_TIMER] = lambda exit, cpu, part: (
        _set_control(rig, F.PIN_BASED_VM_EXEC_CONTROL, Pin.ACTIVATE_PREEMPTION_TIMER, on=False)
        or RESUME)
    run(rig, "mov ecx, 1000; l: dec ecx; jnz l; hlt")
    timer = _exits(rig, ExitReason.PREEMPTION_TIMER)
    assert len(timer) == 1 and int(timer[0].reason) == 52
    assert timer[0].instructions == 10 << rig.cpu.caps.preemption_timer_rate
    assert _reasons(rig)[-1] is ExitReason.HLT and rig.get("rcx") == 0


def test_preemption_timer_value_zero_exits_before_any_instruction(rig: Rig) -> None:
    _set_control(rig, F.PIN_BASED_VM_EXEC_CONTROL, Pin.ACTIVATE_PREEMPTION_TIMER)
    rig.cpu.vmcs.write(F.VMX_PREEMPTION_TIMER_VALUE, 0)
    rig.partition.handlers[ExitReason.PREEMPTION_TIMER] = lambda exit, cpu, part: (
        _set_control(rig, F.PIN_BASED_VM_EXEC_CONTROL, Pin.ACTIVATE_PREEMPTION_TIMER, on=False)
        or RESUME)
    run(rig, "inc eax; hlt")
    first = rig.outcomes[0][0]
    assert first.reason is ExitReason.PREEMPTION_TIMER
    assert first.guest_rip == CODE and first.instructions == 0


def test_preemption_timer_re_arms_at_every_entry(rig: Rig) -> None:
    _set_control(rig, F.PIN_BASED_VM_EXEC_CONTROL, Pin.ACTIVATE_PREEMPTION_TIMER)
    rig.cpu.vmcs.write(F.VMX_PREEMPTION_TIMER_VALUE, 4)
    run(rig, "mov ecx, 200; l: dec ecx; jnz l; hlt")
    timer = _exits(rig, ExitReason.PREEMPTION_TIMER)
    assert [exit.instructions for exit in timer] == [128 * n for n in range(1, len(timer) + 1)]
    assert len(timer) == (2 + 2 * 200) // 128


def test_save_preemption_timer_value_at_exits(rig: Rig) -> None:
    _set_control(rig, F.PIN_BASED_VM_EXEC_CONTROL, Pin.ACTIVATE_PREEMPTION_TIMER)
    _set_control(rig, F.VM_EXIT_CONTROLS, ExitControls.SAVE_PREEMPTION_TIMER)
    rig.cpu.vmcs.write(F.VMX_PREEMPTION_TIMER_VALUE, 10)
    at_mark: list[int] = []
    at_timer: list[int] = []
    _on_mark(rig, lambda exit: at_mark.append(rig.cpu.vmcs.read(F.VMX_PREEMPTION_TIMER_VALUE)))

    def timer(exit, cpu, partition):  # type: ignore[no-untyped-def]
        at_timer.append(cpu.vmcs.read(F.VMX_PREEMPTION_TIMER_VALUE))
        # SDM 26.2.1.2: saving the timer requires the timer, so both go off together.
        _set_control(rig, F.PIN_BASED_VM_EXEC_CONTROL, Pin.ACTIVATE_PREEMPTION_TIMER, on=False)
        _set_control(rig, F.VM_EXIT_CONTROLS, ExitControls.SAVE_PREEMPTION_TIMER, on=False)
        return RESUME
    rig.partition.handlers[ExitReason.PREEMPTION_TIMER] = timer
    run(rig, f"mov ecx, 50; l: dec ecx; jnz l; out {MARK:#x}, al; mov ecx, 500; m: dec ecx; jnz m; hlt")
    assert len(at_mark) == 1 and 5 <= at_mark[0] < 10    # ~101 instructions = 3 ticks of 32
    assert at_timer == [0]


def test_pause_loop_exiting(rig: Rig) -> None:
    _set_control(rig, F.SECONDARY_VM_EXEC_CONTROL, S.PAUSE_LOOP_EXITING)
    rig.cpu.vmcs.write(F.PLE_GAP, 128)
    rig.cpu.vmcs.write(F.PLE_WINDOW, 4096)
    run(rig, "mov ecx, 10000; l: pause; dec ecx; jnz l; hlt")
    # 3 instructions (3 TSC ticks) per iteration: each PAUSE is within PLE_Gap of the last,
    # so the loop exits at the PAUSE 1366 iterations (> 4096 ticks) after the loop's first;
    # the exit ends the loop, and the next PAUSE starts a new one. (Counting starts at the
    # first PAUSE, which reads the TSC: the MOV before it ran while guest time stood still.)
    pauses = _exits(rig, ExitReason.PAUSE)
    assert [exit.instructions for exit in pauses] == [3 * (1366 + 1367 * n) for n in range(7)]


def test_nmi_window_exiting_without_virtual_nmi_blocking(rig: Rig) -> None:
    _set_control(rig, F.PIN_BASED_VM_EXEC_CONTROL, Pin.NMI_EXITING | Pin.VIRTUAL_NMIS)
    _set_control(rig, F.CPU_BASED_VM_EXEC_CONTROL, P.NMI_WINDOW_EXITING)
    rig.partition.handlers[ExitReason.NMI_WINDOW] = lambda exit, cpu, part: (
        _set_control(rig, F.CPU_BASED_VM_EXEC_CONTROL, P.NMI_WINDOW_EXITING, on=False) or RESUME)
    run(rig, "nop; hlt")
    first = rig.outcomes[0][0]
    assert (first.reason, first.guest_rip) == (ExitReason.NMI_WINDOW, CODE)


def test_injected_nmi_blocks_until_iret_then_the_nmi_window_opens(rig: Rig) -> None:
    """With virtual NMIs an injected NMI sets blocking by NMI (interruptibility bit 3) until
    the handler's IRET; NMI-window exiting then exits at the first instruction after it."""
    _set_control(rig, F.PIN_BASED_VM_EXEC_CONTROL, Pin.NMI_EXITING | Pin.VIRTUAL_NMIS)
    _handler(rig, 2, f"mov dword ptr [{RESULT:#x}], 1; out {MARK:#x}, al; iretd")
    blocking: list[int] = []

    def at_mark(exit: VmExit) -> None:
        blocking.append(rig.cpu.vmcs.read(F.GUEST_INTERRUPTIBILITY_INFO) & 0x8)
        if len(blocking) == 1:
            rig.cpu.inject(InterruptionInfo.nmi())
            _set_control(rig, F.CPU_BASED_VM_EXEC_CONTROL, P.NMI_WINDOW_EXITING)
    _on_mark(rig, at_mark)
    rig.partition.handlers[ExitReason.NMI_WINDOW] = lambda exit, cpu, part: (
        _set_control(rig, F.CPU_BASED_VM_EXEC_CONTROL, P.NMI_WINDOW_EXITING, on=False) or RESUME)
    run(rig, f"out {MARK:#x}, al; nop; hlt")
    assert blocking == [0, 0x8]                       # in the NMI handler: blocked
    window = _exits(rig, ExitReason.NMI_WINDOW)
    assert [exit.guest_rip for exit in window] == [CODE + 2]     # right after the IRET
    assert rig.u32(RESULT) == 1
    assert not rig.cpu.vmcs.read(F.GUEST_INTERRUPTIBILITY_INFO) & 0x8


def test_monitor_trap_flag_exits_after_each_instruction(rig: Rig) -> None:
    """MTF: one instruction, then exit 37 at the next boundary (SDM 25.5.2); the handler
    leaves it on for two steps, then turns it off."""
    steps: list[int] = []

    def mtf(exit, cpu, partition):  # type: ignore[no-untyped-def]
        steps.append(exit.guest_rip)
        if len(steps) == 2:
            _set_control(rig, F.CPU_BASED_VM_EXEC_CONTROL, P.MONITOR_TRAP_FLAG, on=False)
        return RESUME
    rig.partition.handlers[ExitReason.MONITOR_TRAP_FLAG] = mtf
    _on_mark(rig, lambda exit: _set_control(rig, F.CPU_BASED_VM_EXEC_CONTROL, P.MONITOR_TRAP_FLAG))
    run(rig, f"out {MARK:#x}, al; nop; inc eax; nop; hlt")
    assert steps == [CODE + 3, CODE + 4]          # after the NOP, after INC EAX
    assert _reasons(rig)[-1] is ExitReason.HLT


def test_injected_pending_mtf_exits_before_the_first_instruction(rig: Rig) -> None:
    """VM entry injecting type 7 (other event), vector 0: an MTF exit before any guest
    instruction, even with the MTF control off (SDM 26.5.2)."""
    _on_mark(rig, lambda exit: rig.cpu.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, 0x8000_0700))
    rig.partition.handlers[ExitReason.MONITOR_TRAP_FLAG] = lambda exit, cpu, part: RESUME
    run(rig, f"out {MARK:#x}, al; nop; hlt")
    mtf = _exits(rig, ExitReason.MONITOR_TRAP_FLAG)
    assert [exit.guest_rip for exit in mtf] == [CODE + 2]


# --- VM entry --------------------------------------------------------------------------------

def test_entry_with_invalid_guest_rflags_fails_with_reason_33(rig: Rig) -> None:
    _on_mark(rig, lambda exit: rig.cpu.vmcs.write(F.GUEST_RFLAGS, 0x8002))   # bit 15 is reserved
    run(rig, f"out {MARK:#x}, al; nop; hlt")
    failed = rig.outcomes[-1][0]
    assert failed.reason is ExitReason.ENTRY_FAILURE_GUEST_STATE and failed.entry_failure
    assert rig.cpu.vmcs.read(F.EXIT_REASON) == 33 | (1 << 31)
    result = rig.partition.result
    assert result is not None and result.exit_code == RunEnd.UNHANDLED_EXIT
    assert "RFLAGS" in result.reason and "26.3.1" in result.reason
    assert rig.get("rip") == CODE + 2                # no guest instruction ran after the OUT


def test_exit_stores_efer_lma_into_the_ia32e_mode_guest_control(rig: Rig) -> None:
    """The guest enters long mode by itself; the next exit sets "IA-32e mode guest" (IA32_VMX_MISC
    bit 5), so the following entry (re-checked after a VMWRITE) is valid."""
    pml4, pdpt, pd = 0x20000, 0x21000, 0x22000
    rig.poke(pml4, struct.pack("<Q", pdpt | 7))
    rig.poke(pdpt, struct.pack("<Q", pd | 7))
    rig.poke(pd, struct.pack("<Q", 0x83))                      # one 2 MiB identity page
    rig.poke(0x1000 + 0x18, struct.pack("<Q", 0x00AF9A000000FFFF))   # GDT 18h: 64-bit code
    assert not rig.cpu.vmcs.read(F.VM_ENTRY_CONTROLS) & EntryControls.IA32E_MODE_GUEST
    entry_controls: list[int] = []
    _on_mark(rig, lambda exit: entry_controls.append(rig.cpu.vmcs.read(F.VM_ENTRY_CONTROLS)))
    rig.partition.handlers[ExitReason.CPUID] = lambda exit, cpu, part: (
        cpu.vmcs.write(F.GUEST_RFLAGS, cpu.vmcs.read(F.GUEST_RFLAGS)) or done(exit, cpu))
    code = (f"out {MARK:#x}, al; mov eax, {pml4:#x}; mov cr3, eax; mov eax, cr4; or eax, 0x20; "
            "mov cr4, eax; mov ecx, 0xc0000080; rdmsr; or eax, 0x100; wrmsr; mov eax, cr0; "
            "or eax, 0x80000000; mov cr0, eax; jmp far_label; far_label: nop")
    first = assemble(code.replace("jmp far_label; far_label: nop", ""), CODE, CodeMode.BITS32)
    far_jump = CODE + len(first)
    target = far_jump + 7
    image = first + bytes([0xEA]) + struct.pack("<IH", target, 0x18)
    image += assemble(f"out {MARK:#x}, al; cpuid; out {MARK:#x}, al; hlt", target, CodeMode.BITS64)
    run(rig, image)
    assert rig.partition.result is None
    assert _reasons(rig)[-1] is ExitReason.HLT
    assert [bool(value & EntryControls.IA32E_MODE_GUEST) for value in entry_controls] == [False, True, True]
    assert rig.mode() is CodeMode.BITS64


# --- privilege checks come before VM exits (SDM 25.1.1) ---------------------------------------

def _ring3(rig: Rig) -> None:
    """Ring 3 with a ring-0 #GP handler recording (error code, faulting EIP) and halting."""
    rig.protected_mode(cpl=3)
    rig.poke(TSS + 4, struct.pack("<IH", STACK0, SEL_DATA32))
    _handler(rig, 13, f"pop eax; mov [{RESULT:#x}], eax; pop eax; mov [{RESULT + 4:#x}], eax; hlt")
    rig.poke(RESULT, b"\xff" * 8)


_CPL3_BUG = ("vtemu bug: vmx/instructions.py decides exits (or emulates) for privileged "
             "instructions without the CPL check that has priority over VM exits (SDM 25.1.1): "
             "at CPL 3 the hypervisor performs the instruction instead of the guest getting #GP(0)")


def _privileged(code: str, bug: bool = False) -> object:
    return pytest.param(code, id=code, marks=pytest.mark.xfail(reason=_CPL3_BUG, strict=True) if bug else ())


@pytest.mark.parametrize("code", [
    _privileged("rdmsr"),
    _privileged("wrmsr"),
    _privileged("mov eax, cr4"),        # CR4.VMXE is owned: read from the shadow
    _privileged("mov eax, cr0"),        # CR0.TS owned below: read from the shadow
    _privileged("invd"),
    _privileged("wbinvd"),              # WBINVD exiting (vtx)
    _privileged("mov eax, dr7"),        # MOV-DR exiting (vtx)
    _privileged("mov dr0, eax"),
    _privileged("lgdt [eax]"),          # descriptor-table exiting (set below)
    _privileged("ltr ax"),
    _privileged("mov cr4, eax"),
    _privileged("mov eax, cr3"),
    _privileged("clts"),
    _privileged("lmsw ax"),
    _privileged("invlpg [eax]"),
    _privileged("hlt"),
])
def test_privileged_instructions_at_cpl3_raise_gp_before_any_exit(code: str) -> None:
    """Ring 3 under the vtx VMCS plus CR0.TS owned and descriptor-table exiting: each privileged
    instruction must raise #GP(0) at itself, with no VM exit before the ring-0 handler's HLT."""
    rig = Rig()
    _ring3(rig)
    rig.cpu.vmcs.write(F.CR0_GUEST_HOST_MASK, 0x8)
    _set_control(rig, F.SECONDARY_VM_EXEC_CONTROL, S.DESCRIPTOR_TABLE_EXITING)
    rig.set(rcx=0xC0000082, rax=0x4000, rdx=0)
    run(rig, f"{code}; hlt", stack=0xA000)
    assert _reasons(rig) == [ExitReason.HLT]          # only the ring-0 handler's HLT exits
    assert (rig.u32(RESULT), rig.u32(RESULT + 4)) == (0, CODE)
    assert rig.partition.result is None


def test_privilege_fault_with_gp_in_the_exception_bitmap_exits_as_an_exception() -> None:
    """The #GP that has priority over the RDMSR exit is itself subject to the exception bitmap:
    exit 0 with vector 13 and error code 0 at the RDMSR; the handler reflects it to the guest."""
    rig = Rig()
    _ring3(rig)
    rig.cpu.vmcs.write(F.EXCEPTION_BITMAP, 1 << 13)
    rig.set(rcx=0x10)
    run(rig, "rdmsr; hlt", stack=0xA000)
    first = rig.outcomes[0][0]
    assert (first.reason, first.guest_rip) == (ExitReason.EXCEPTION_OR_NMI, CODE)
    assert first.interruption == InterruptionInfo.exception(13, error_code=True)
    assert first.interruption_error == 0
    assert (rig.u32(RESULT), rig.u32(RESULT + 4)) == (0, CODE)


def test_unprivileged_sensitive_instructions_at_cpl3_still_exit() -> None:
    rig = Rig()
    _ring3(rig)
    rig.set(rax=0)
    run(rig, "cpuid; rdtsc; hlt", stack=0xA000)
    assert _reasons(rig) == [ExitReason.CPUID, ExitReason.HLT]   # RDTSC runs (no RDTSC exiting)
    assert rig.u32(RESULT + 4) == CODE + 4                       # the ring-3 HLT faults
