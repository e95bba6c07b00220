"""The binary translator on hand-written code: where basic blocks end, how instructions are
classified, what the emitted translation-cache code does with RIP-relative operands, far
calls and branches, and the checked assembler's repair of Keystone's misencoding."""

from __future__ import annotations

import capstone
import pytest
from keystone import KS_ARCH_X86, KS_MODE_32, KS_MODE_64, Ks

from vtemu.machine.decode import CodeMode, Decoder
from vtemu.modes.bt import region
from vtemu.modes.bt.assemble import assemble
from vtemu.modes.bt.decode import BlockReader, Shape
from vtemu.modes.bt.emit import Emitter, Untranslatable

GUEST = 0x100000
TC = region.WINDOW_64 + region.CODE
_KS = {CodeMode.BITS32: Ks(KS_ARCH_X86, KS_MODE_32), CodeMode.BITS64: Ks(KS_ARCH_X86, KS_MODE_64)}
_CS = {CodeMode.BITS32: capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32),
       CodeMode.BITS64: capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)}


def reader_for(source: str, mode: CodeMode = CodeMode.BITS64) -> BlockReader:
    code = bytes(_KS[mode].asm(source, GUEST)[0]) + bytes(32)
    return BlockReader(Decoder(), lambda address: code[address - GUEST:address - GUEST + 16])


def shapes(source: str, mode: CodeMode = CodeMode.BITS64) -> list[Shape]:
    return [gi.shape for gi in reader_for(source, mode).block(GUEST, mode)]


def test_a_block_runs_to_the_first_branch() -> None:
    assert shapes("mov eax, 1; add eax, ebx; jne 0x100000; nop") == [Shape.IDENT, Shape.IDENT, Shape.JCC]
    assert shapes("xor eax, eax; call 0x100100; nop") == [Shape.IDENT, Shape.CALL]
    assert shapes("push rax; ret; nop") == [Shape.IDENT, Shape.RET]
    assert shapes("jmp rax") == [Shape.JMP_INDIRECT]
    assert shapes("call qword ptr [rax + 8]") == [Shape.CALL_INDIRECT]


def test_sensitive_instructions_are_classified_not_copied() -> None:
    assert shapes("out dx, al; cpuid; hlt") == [Shape.CALLOUT, Shape.CALLOUT, Shape.HLT]
    assert shapes("mov cr8, rax; mov rbx, cr8; mov rcx, cr0; mov rdx, cr4; iretq") == [
        Shape.CR8_WRITE, Shape.CR8_READ, Shape.CR_READ, Shape.CR_READ, Shape.LEAVES]
    assert shapes("int 0x80") == [Shape.TRAP]


def test_far_transfers_through_memory_are_recognised_whatever_capstone_calls_them() -> None:
    assert shapes("lcall [eax]", CodeMode.BITS32) == [Shape.INTERPRET]
    assert shapes("ljmp [eax]", CodeMode.BITS32) == [Shape.LEAVES]
    assert shapes("call dword ptr [eax]", CodeMode.BITS32) == [Shape.CALL_INDIRECT]


def _emit(source: str, mode: CodeMode = CodeMode.BITS64) -> list:
    block = reader_for(source, mode).block(GUEST, mode)
    tc = TC if mode is CodeMode.BITS64 else region.WINDOW_32 + region.CODE
    emitter = Emitter(mode, tc, GUEST, tc)
    for gi in block:
        emitter.instruction(gi, gi.address)
    fragment = emitter.finish()
    return list(_CS[mode].disasm(bytes(fragment.code), tc))


def test_rip_relative_operands_reach_the_guest_data_from_the_translation_cache() -> None:
    guest = list(_CS[CodeMode.BITS64].disasm(bytes(_KS[CodeMode.BITS64].asm(
        "lea rax, [rip + 0x1000]; add qword ptr [rip + 0x2000], 5", GUEST)[0]), GUEST))
    wanted = [insn.address + insn.size + int(insn.op_str.split("rip + ")[1].split("]")[0], 16)
              for insn in guest]
    emitted = _emit("lea rax, [rip + 0x1000]; add qword ptr [rip + 0x2000], 5; ret")[:2]
    for insn, target in zip(emitted, wanted):
        displacement = int(insn.op_str.split("rip ")[1].split("]")[0].replace(" ", ""), 16)
        assert (insn.address + insn.size + displacement) & (2**64 - 1) == target


def test_a_call_pushes_the_guest_return_address_never_a_tc_address() -> None:
    emitted = _emit("call 0x100100")
    assert emitted[0].mnemonic == "push" and int(emitted[0].op_str, 16) == GUEST + 5


def test_far_call_becomes_push_cs_push_return_and_far_jump() -> None:
    emitted = _emit("lcall 0x08:0x100200", CodeMode.BITS32)
    assert [insn.mnemonic for insn in emitted[:3]] == ["push", "push", "ljmp"]
    assert emitted[0].op_str == "cs" and int(emitted[1].op_str, 16) == GUEST + 7
    with pytest.raises(Untranslatable):
        _emit("lcall [esp + 4]", CodeMode.BITS32)       # the pushes would move its operand


def test_checked_assembler_repairs_keystones_rip_relative_loads() -> None:
    data = region.WINDOW_64 + region.TARGET
    code = assemble(CodeMode.BITS64, f"mov rcx, qword ptr [{data:#x}]", TC)
    insn = next(_CS[CodeMode.BITS64].disasm(code, TC))
    displacement = int(insn.op_str.split("rip ")[1].split("]")[0].replace(" ", ""), 16)
    assert (insn.address + insn.size + displacement) & (2**64 - 1) == data


def test_a_self_check_compares_every_byte_of_the_block_and_calls_out_on_a_mismatch() -> None:
    code = bytes(range(1, 11))                           # 10 bytes: two dwords and two bytes
    emitter = Emitter(CodeMode.BITS64, TC, GUEST, TC)
    emitter.self_check(GUEST, code)
    fragment = emitter.finish()
    emitted = list(_CS[CodeMode.BITS64].disasm(bytes(fragment.code), TC))
    compares = [insn for insn in emitted if insn.mnemonic == "cmp"]
    assert [insn.op_str.split(",")[1].strip() for insn in compares] == [
        "0x4030201", "0x8070605", "9", "0xa"]
    (at, callout), = fragment.callouts.items()
    assert callout.kind == "check" and callout.target == GUEST
    assert fragment.checked == code and fragment.body == emitted[-1].address + 1
