"""Round-trip check: each class of Keystone misencoding is caught, correct code passes,
and the replacement each error suggests really assembles to the intended instruction."""

import re

import pytest

from tests.unit.asm.helpers import BASE, checked, decode, instructions
from vtemu.asm.assembler import AssembledImage, PlacedStatement
from vtemu.asm.roundtrip import check_roundtrip
from vtemu.asm.source import CodeMode, SourceLoc, Statement, StatementKind
from vtemu.errors import AssemblyError

# (source, expected message after "t.S:N: Keystone misencoded `stmt`: ")
MISENCODED = {
    # (a) decode desync: Keystone accepts instructions that do not exist in 64-bit code
    "desync_into": (".code64\ninto", r"the bytes do not decode as an instruction in 64-bit code"),
    "desync_salc": (".code64\nsalc", r"the bytes do not decode as an instruction in 64-bit code"),
    # (b) mnemonic: there is no movsq outside 64-bit code; Keystone emits movsd
    "mnemonic_movsq": ("movsq", r"it decodes as `movsd dword ptr es:\[edi\], dword ptr \[esi\]`"),
    # (c) implicit operand sizes
    "ljmp32": ("ljmp 0x08:0x100010", r"16-bit operand size where the mode default is 32-bit"),
    "lgdt32": ("lgdt [gdtr]\ngdtr: .word 0\n.long 0", r"16-bit operand size where the mode default "
               r"is 32-bit \(with a 16-bit operand it loads only 24 bits of the base\)"),
    "lidt32": ("lidt [eax]", r"16-bit operand size .*loads only 24 bits of the base"),
    "push_ds": ("push ds", r"16-bit operand size .*moves 2 bytes on the stack instead of 4"),
    "pop_es": ("pop es", r"16-bit operand size .*moves 2 bytes on the stack instead of 4"),
    "push_fs16": (".code16\npush fs", r"32-bit operand size .*moves 4 bytes on the stack instead of 2"),
    "call16": (".code16\ncall target\ntarget: nop", r"32-bit operand size where the mode default "
               r"is 16-bit \(it pushes a 32-bit return address\)"),
    "ret16": (".code16\nret", r"32-bit operand size .*pops a 32-bit return address"),
    "retf16": (".code16\nretf", r"32-bit operand size .*pops a 32-bit offset and selector"),
    "retf16_imm": (".code16\nretf 4", r"32-bit operand size .*pops a 32-bit offset and selector"),
    "push_imm16": (".code16\npush 0x1234", r"32-bit operand size .*moves 4 bytes on the stack instead of 2"),
    "push_dword32": ("push dword 5", r"16-bit operand size where the source asks for 32-bit"),
    "push_word32": ("push word 0x1234", r"32-bit operand size where the source asks for 16-bit"),
    "push_dword16": (".code16\npush dword 5", r"16-bit operand size where the source asks for 32-bit"),
    "data16_retf16": (".code16\ndata16 retf", r"32-bit operand size where the source asks for 16-bit"),
    "iret32": ("iret", r"16-bit operand size .*pops 16-bit IP, CS and FLAGS"),
    "pushf64": (".code64\npushf", r"16-bit operand size where the mode default is 64-bit"),
    "cqo32": ("cqo", r"32-bit operand size where the source asks for 64-bit"),
    "far_offset16": (".code16\nljmp 0x08:0x100000", r"the far pointer decodes as 0x8:0x0, not 0x8:0x100000"),
    # (d) memory operand scale dropped
    "scale_label": ("mov eax, [ebx+tbl*4]\ntbl: .long 0", r"the source scales `tbl` by 4 but the "
                    r"operand decodes as `eax, dword ptr \[ebx \+ 0x\w+\]` \(index none, scale none\)"),
    "scale_equ": (".equ K, 4\nmov eax, [ebx+K*4]", r"the source scales `K` by 4"),
}

WORKAROUNDS = {
    "ljmp32": "LJMP32 0x08, 0x100010",
    "lgdt32": "LGDT32 gdtr",
    "lidt32": ".byte 0x0f, 0x01, 0x18",
    "push_ds": "PUSH_DS",
    "pop_es": "POP_ES",
    "push_fs16": ".byte 0x0f, 0xa0",
    "call16": "CALL16 target",
    "ret16": "RET16",
    "retf16": "RETF16",
    "retf16_imm": ".byte 0xca, 0x04, 0x00",
    "push_imm16": "PUSHW16 0x1234",
    "push_dword32": "PUSHD32 5",
    "push_word32": "PUSHW32 0x1234",
    "push_dword16": "PUSHD16 5",
    "data16_retf16": "RETF16",
    "iret32": "iretd",
    "pushf64": "pushfq",
    "far_offset16": "LJMP16_32 0x08, 0x100000",
    "scale_label": "[tbl + ebx*4]",
    "scale_equ": "[K + ebx*4]",
}


def misencoding_message(source: str) -> str:
    with pytest.raises(AssemblyError) as caught:
        checked(source)
    return str(caught.value)


@pytest.mark.parametrize("case", sorted(MISENCODED))
def test_each_misencoding_is_reported_at_its_line(case: str) -> None:
    source, why = MISENCODED[case]
    lines = source.split("\n")
    line = next(n for n, text in enumerate(lines, 1) if not text.startswith((".code", ".equ")))
    message = misencoding_message(source)
    assert re.match(rf"t\.S:{line}: Keystone misencoded `{re.escape(lines[line - 1])}`: {why}", message)
    assert re.search(r" \(bytes [0-9a-f ]+\); write .+ instead$", message)
    assert "\n" not in message


@pytest.mark.parametrize("case", sorted(WORKAROUNDS))
def test_suggested_workaround_is_named(case: str) -> None:
    message = misencoding_message(MISENCODED[case][0])
    assert re.search(rf"; write {re.escape(WORKAROUNDS[case])}( \(x86\.inc\)| \(a scale .*\))? instead$",
                     message)


SUGGESTION_REPLACES = {   # case -> (mode, statement to substitute, decoded mnemonic, prefix 0x66?)
    "ljmp32": (32, "ljmp", False), "lgdt32": (32, "lgdt", False), "lidt32": (32, "lidt", False),
    "push_ds": (32, "push", False), "pop_es": (32, "pop", False), "push_fs16": (16, "push", False),
    "call16": (16, "call", False),
    "ret16": (16, "ret", False), "retf16": (16, "retf", False), "retf16_imm": (16, "retf", False),
    "push_imm16": (16, "push", False), "push_dword32": (32, "push", False),
    "push_word32": (32, "push", True), "push_dword16": (16, "push", True),
    "iret32": (32, "iretd", False), "pushf64": (64, "pushfq", False),
    "far_offset16": (16, "ljmp", True),
}


@pytest.mark.parametrize("case", sorted(SUGGESTION_REPLACES))
def test_workaround_assembles_to_the_intended_instruction(case: str) -> None:
    bits, mnemonic, operand_prefix = SUGGESTION_REPLACES[case]
    lines = MISENCODED[case][0].split("\n")
    index = next(n for n, text in enumerate(lines) if not text.startswith(".code"))
    lines[index] = f"fixed: {WORKAROUNDS[case]}"
    image = checked('.include "x86.inc"\n' + "\n".join(lines))
    start = image.symbols["fixed"]
    insn = decode(image.data[start - BASE:], bits, start)[0]
    assert insn.mnemonic == mnemonic
    assert (insn.prefix[2] == 0x66) is operand_prefix


CORRECT = [
    "mov eax, [tbl+ebx*4]\nmov eax, [4*ecx+ebx]\nmov eax, [ecx*1]\nmov eax, [ebx+ecx]\n"
    "lea esi, [esi+edi*8+0x10]\nmov eax, [ebx+4*4]\ntbl: .long 0",
    "iretd\npushfd\npopfd\npushad\npopad\npush fs\npop gs\npush 5\npush 0x12345678\npush eax\n"
    "push word 5\npush dword ptr [ebx]\npush word ptr [ebx]\ncall [eax]\ncall eax\nret\nret 4\nretf",
    "lcall 0x08:0x1000\ncbw\ncwde\ncwd\ncdq\nljmp [eax]\nlcall [eax]\nsgdt [eax]",
    "jz x\njnc x\nsetnz al\ncmovnae eax, ebx\nsal eax, 1\nfwait\nicebp\nxchg eax, eax\nx: nop",
    "rep movsb\nrepz cmpsb\nlock xadd [eax], ebx\nmovsb\nmovsw\nstosd\nvmcall\nwrmsr\ncpuid\nhlt",
    ".code16\npush ds\npop es\niret\niretd\npushf\npushfd\npusha\npushad\ncbw\ncwd\nint 0x10\n"
    "ljmp 0xf000:0xfff0\nlgdt [0x500]\npush eax\ncall ax\npush dword ptr [bx]\npush word 5\n"
    "mov eax, [ebx+ecx*4]\njmp x\nx: nop",
    ".code64\niretq\npushfq\npopfq\nretfq\nret\npush 5\npush rax\nlgdt [rax]\nlidt [0x1000]\n"
    "mov rax, 0x1122334455667788\nmovsx rax, ebx\nxchg eax, eax\nsysret\ncdqe\ncqo\n"
    "lea rax, [rip + tbl]\nmov rax, [rbx+rcx*8]\ntbl: .quad 0",
]


@pytest.mark.parametrize("source", CORRECT, ids=range(len(CORRECT)))
def test_correct_code_passes(source: str) -> None:
    image = checked(source)
    assert instructions(image)


def test_data_statements_are_not_decoded() -> None:
    checked(".byte 0x0f, 0x0b, 0xff\n.long 0xdeadbeef\n.ascii \"xyz\"\n.fill 3, 1, 0xff\n.balign 16, 0xff\n")


def test_bytes_that_decode_as_several_instructions_are_a_desync() -> None:
    statement = Statement("nop", StatementKind.INSTRUCTION, CodeMode.BITS32, SourceLoc("t.S", 7))
    image = AssembledImage(b"\x90\xc3", BASE, (PlacedStatement(statement, BASE, 2),), {})
    with pytest.raises(AssemblyError, match=r"^t\.S:7: Keystone misencoded `nop`: its 2 bytes decode "
                                            r"as 2 instruction\(s\) \(nop; ret\), not one \(bytes 90 c3\)"):
        check_roundtrip(image)


def test_instruction_without_bytes_is_a_desync() -> None:
    statement = Statement("nop", StatementKind.INSTRUCTION, CodeMode.BITS32, SourceLoc("t.S", 3))
    image = AssembledImage(b"", BASE, (PlacedStatement(statement, BASE, 0),), {})
    with pytest.raises(AssemblyError, match=r"^t\.S:3: Keystone misencoded `nop`: Keystone emitted no bytes"):
        check_roundtrip(image)


def test_misencoding_inside_a_macro_names_both_lines() -> None:
    source = ".macro SAVE\n    push ds\n.endm\nnop\nSAVE\n"
    assert misencoding_message(source).startswith(
        "t.S:5 (in macro SAVE at t.S:2): Keystone misencoded `push ds`")
