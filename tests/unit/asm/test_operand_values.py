"""Displacement, address-size and value checks: Keystone's wrong operand values are caught,
correct code (including the firmware and every guest) passes, and each replacement an error
suggests really assembles to the operand the source meant."""

import re
from pathlib import Path

import pytest
from capstone import CsInsn
from capstone.x86 import X86_OP_MEM, X86_REG_RIP

from tests.unit.asm.helpers import BASE, checked, decode
from vtemu.asm import build_guest
from vtemu.asm.assembler import AssembledImage, PlacedStatement
from vtemu.asm.constexpr import evaluate_with_values
from vtemu.asm.roundtrip import check_roundtrip
from vtemu.asm.source import CodeMode, SourceLoc, Statement, StatementKind
from vtemu.errors import AssemblyError
from vtemu.images import FIRMWARE_SOURCE, PROJECT, build_firmware

ROM = 0xF0000
_KEEPS_LAST = r" \(Keystone 0\.9\.2 keeps only the last symbol in brackets, without its sign\)"


# case -> (bits, base, source, expected `why`, suggested replacement, what the operand means)
FIXABLE = {
    # Keystone keeps only the last symbol in brackets (and drops its sign)
    "label_plus_equ": (32, BASE, ".equ C, 36\nmov [lab + C], eax\nlab: .long 0",
                       r"the displacement is 0x24, the source means 0x100029" + _KEEPS_LAST,
                       ".equ lab_plus_C, lab + C; mov [lab_plus_C], eax", "lab + C"),
    "equ_plus_label": (32, BASE, ".equ C, 36\nmov eax, [C + lab]\nlab: .long 0",
                       r"the displacement is 0x100005, the source means 0x100029" + _KEEPS_LAST,
                       ".equ C_plus_lab, C + lab; mov eax, [C_plus_lab]", "C + lab"),
    "base_register": (32, BASE, ".equ C, 36\nmov eax, [ebx + lab + C]\nlab: .long 0",
                      r"the displacement is 0x24, the source means 0x100027" + _KEEPS_LAST,
                      ".equ lab_plus_C, lab + C; mov eax, [ebx + lab_plus_C]", "lab + C"),
    "scaled_index": (32, BASE, ".equ C, 36\nmov eax, [lab - C + ecx*4]\nlab: .long 0",
                     r"the displacement is 0x24, the source means 0xfffe3" + _KEEPS_LAST,
                     ".equ lab_minus_C, lab - C; mov eax, [ecx*4 + lab_minus_C]", "lab - C"),
    "label_difference": (32, BASE, "mov eax, [lab2 - lab]\nlab: .long 0\nlab2: .long 0",
                         r"the displacement is 0x100005, the source means 0x4" + _KEEPS_LAST,
                         ".equ lab2_minus_lab, lab2 - lab; mov eax, [lab2_minus_lab]", "lab2 - lab"),
    "negated_equ": (32, BASE, ".equ C, 36\nmov eax, [-C]",
                    r"the displacement is 0x24, the source means -0x24" + _KEEPS_LAST,
                    ".equ minus_C, -C; mov eax, [minus_C]", "-C"),
    "long_mode_absolute": (64, BASE, ".code64\n.equ C, 36\nmov eax, [lab + C]\nlab: .long 0",
                           r"the displacement is 0x24, the source means 0x10002d" + _KEEPS_LAST,
                           ".equ lab_plus_C, lab + C; mov eax, [lab_plus_C]", "lab + C"),
    "rip_relative": (64, BASE, ".code64\n.equ C, 36\nmov eax, [rip + lab + C]\nnop\nlab: .long 0",
                     r"the RIP-relative operand reaches 0x10002a, the source means 0x10002b"
                     + _KEEPS_LAST,
                     ".equ lab_plus_C, lab + C; mov eax, [rip + lab_plus_C]", "lab + C"),
    # the firmware's case: 0x67 prefix and the base instead of the offset
    "real_mode_lgdt": (16, ROM, ".code16\n.equ ROM_BASE, 0xF0000\nlgdt cs:[gdt_descriptor - ROM_BASE]\n"
                                "gdt_descriptor: .word 0\n.long 0",
                       r"the displacement is 0xf0000, the source means 0x9" + _KEEPS_LAST,
                       ".byte 0x2e, 0x0f, 0x01, 0x16; .word gdt_descriptor - ROM_BASE",
                       "gdt_descriptor - ROM_BASE"),
    "real_mode_base_register": (16, ROM, ".code16\n.equ ROM_BASE, 0xF0000\n"
                                         "mov ax, [bx + lab - ROM_BASE]\nlab: .word 0",
                                r"the displacement is 0x0, the source means 0x4" + _KEEPS_LAST,
                                ".equ lab_minus_ROM_BASE, lab - ROM_BASE; "
                                "mov ax, [bx + lab_minus_ROM_BASE]", "lab - ROM_BASE"),
    # 16-bit code: a displacement not known at its line gets a 32-bit address
    "forward_constant": (16, BASE, ".code16\nlgdt [K]\n.equ K, 0x70",
                         r"32-bit address size \(0x67 prefix\) where the mode default is 16-bit",
                         ".byte 0x0f, 0x01, 0x16; .word K", "K"),
    "forward_constant_and_immediate": (16, BASE, ".code16\nmov word ptr [K], 5\n.equ K, 0x70",
                                       r"32-bit address size \(0x67 prefix\) where the mode "
                                       r"default is 16-bit",
                                       ".byte 0xc7, 0x06; .word K; .byte 0x05, 0x00", "K"),
    "label_offset": (16, ROM, ".code16\n.equ ROM_BASE, 0xF0000\n.equ OFF, lab - ROM_BASE\nlidt [OFF]\n"
                              "lab: .word 0\n.long 0",
                     r"32-bit address size \(0x67 prefix\) where the mode default is 16-bit",
                     ".byte 0x0f, 0x01, 0x1e; .word OFF", "OFF"),
}

# case -> (source, expected `why`, expected workaround text): no single replacement exists
REPORTED = {
    "offset_too_wide16": (".code16\nmov ax, [0x12345]",
                          r"the displacement is 0x2345, the source means 0x12345, which does not "
                          r"fit a 16-bit address",
                          "an OFFSET below 0x10000 from the segment base (e.g. .byte 0xa1; .word "
                          "OFFSET), or name a 32-bit base register if a 32-bit offset is meant"),
    "address_too_wide16": (".code16\nlgdt [0x12345]",
                           r"32-bit address size \(0x67 prefix\) where the mode default is 16-bit",
                           "an OFFSET below 0x10000 from the segment base (e.g. .byte 0x0f, 0x01, "
                           "0x16; .word OFFSET), or name a 32-bit base register if a 32-bit "
                           "offset is meant"),
    "displacement_out_of_range64": (".code64\nmov eax, [rbx + 0xFFFFFFFF]",
                                    r"the displacement is -0x1, the source means 0xffffffff",
                                    "a displacement that fits the sign-extended 32-bit field (add "
                                    "the rest to a register first)"),
    "immediate_truncated16": (".code16\nmov ax, 0x12345",
                              r"the immediate is 0x2345, the source means 0x12345, which does not "
                              r"fit the 16-bit operand", "a value that fits 16 bits"),
    "immediate_truncated8": ("mov al, 0x1ff",
                             r"the immediate is 0xff, the source means 0x1ff, which does not fit "
                             r"the 8-bit operand", "a value that fits 8 bits"),
    "far_pointer_equ": (".equ SEL, 8\n.equ OFF, 0x100000\n.code16\nljmp SEL:OFF",
                        r"the far pointer decodes as 0x8:0x0, not 0x8:0x100000 \(the offset does not fit the "
                        r"operand size\)",
                        "LJMP16_32 SEL, OFF (x86.inc)"),
}


def _failing_line(source: str) -> tuple[int, str]:
    lines = source.split("\n")
    number = next(n for n, text in enumerate(lines, 1) if not text.startswith((".code", ".equ")))
    return number, lines[number - 1]


def _message(source: str, base: int = BASE) -> str:
    with pytest.raises(AssemblyError) as caught:
        checked(source, base)
    return str(caught.value)


def _assert_reported(source: str, base: int, why: str, workaround: str) -> None:
    number, statement = _failing_line(source)
    message = _message(source, base)
    assert re.match(rf"t\.S:{number}: Keystone misencoded `{re.escape(statement)}`: {why} "
                    rf"\(bytes [0-9a-f ]+\); write {re.escape(workaround)} instead$", message), message


@pytest.mark.parametrize("case", sorted(FIXABLE))
def test_misencoded_operand_is_reported_with_its_replacement(case: str) -> None:
    _, base, source, why, workaround, _ = FIXABLE[case]
    _assert_reported(source, base, why, workaround)


@pytest.mark.parametrize("case", sorted(REPORTED))
def test_misencoded_operand_without_replacement_is_reported(case: str) -> None:
    source, why, workaround = REPORTED[case]
    _assert_reported(source, BASE, why, workaround)


def test_the_firmware_lgdt_bytes_are_the_ones_reported() -> None:
    message = _message(FIXABLE["real_mode_lgdt"][2], ROM)
    assert "(bytes 2e 67 0f 01 15 00 00 0f 00)" in message


def _reached(insn: CsInsn) -> int:
    """The address the single memory operand of `insn` names (without base/index registers)."""
    mem = next(op.mem for op in insn.operands if op.type == X86_OP_MEM)
    return insn.address + insn.size + mem.disp if mem.base == X86_REG_RIP else mem.disp


@pytest.mark.parametrize("case", sorted(FIXABLE))
def test_replacement_encodes_the_meant_operand(case: str) -> None:
    bits, base, source, _, workaround, meant = FIXABLE[case]
    number, _ = _failing_line(source)
    lines = source.split("\n")
    lines[number - 1] = f"fixed: {workaround}"
    image = checked("\n".join(lines), base)
    start = image.symbols["fixed"]
    insn = decode(image.data[start - base:], bits, start)[0]
    wanted = evaluate_with_values(meant, image.symbols)
    assert _reached(insn) % (1 << (insn.addr_size * 8)) == wanted % (1 << (insn.addr_size * 8))
    assert insn.addr_size * 8 == bits
    assert insn.prefix[3] != 0x67


def _one_instruction(text: str, data: bytes, symbols: dict[str, int],
                     mode: CodeMode = CodeMode.BITS32) -> AssembledImage:
    """An image holding bytes Keystone never produces, to reach checks no current bug reaches."""
    statement = Statement(text, StatementKind.INSTRUCTION, mode, SourceLoc("t.S", 4))
    return AssembledImage(data, BASE, (PlacedStatement(statement, BASE, len(data)),), symbols)


@pytest.mark.parametrize("text, data, symbols, message", [
    ("jmp x", b"\xeb\x00", {"x": BASE + 5},
     r"the branch target is 0x100002, the source means 0x100005 \(bytes eb 00\); write its exact "
     r"bytes with \.byte instead"),
    ("mov eax, FIVE", b"\xb8\x06\x00\x00\x00", {"FIVE": 5},
     r"the immediate is 0x6, the source means 0x5 \(bytes b8 06 00 00 00\)"),
    ("mov eax, [0x10]", b"\x67\xa1\x10\x00", {},
     r"16-bit address size \(0x67 prefix\) where the mode default is 32-bit \(bytes 67 a1 10 00\); "
     r"write the 32-bit-address form's exact bytes with \.byte instead"),
    ("mov eax, [bx]", b"\x8b\x07", {},
     r"32-bit address size where the source asks for 16-bit"),
])
def test_values_keystone_gets_right_today_are_still_compared(text: str, data: bytes,
                                                             symbols: dict[str, int],
                                                             message: str) -> None:
    with pytest.raises(AssemblyError, match=rf"^t\.S:4: Keystone misencoded `{re.escape(text)}`: {message}"):
        check_roundtrip(_one_instruction(text, data, symbols))


CORRECT = {
    "bits32": (BASE, ".equ C, 36\n.equ LC, lab + C\n"
                     "mov [lab + 36], eax\nmov eax, [LC]\nmov eax, [ebx + LC]\nmov eax, [LC + ebx*4]\n"
                     "mov eax, [FWD]\nmov eax, [esi + ebp + 4]\nmov eax, [ebx - 1]\n"
                     "mov eax, [ebx + 0xFFFFFFFF]\nmov eax, [lab + 'A']\nmov eax, [lab + 2*3]\n"
                     "mov eax, [lab - 4]\nmov eax, [C - 4]\nmov eax, [ebx - 7/2]\nmov al, 'A'\n"
                     "mov eax, lab + C\nmov eax, lab2 - lab\nadd eax, -1\nand eax, 0xfffffff8\n"
                     "push -1\nenter 0x24, 1\nin al, C\nint C\nimul eax, ebx, C + lab\n"
                     "or eax, 3 << 12\nshl eax, 1\nret 4\n"
                     "jmp lab\ncall lab\njz lab\nloop lab\n"
                     "lab: .long 0\nlab2: .long 0\n.equ FWD, lab + 8"),
    "bits16": (ROM, '.include "x86.inc"\n.code16\n.equ ROM_BASE, 0xF0000\n.equ K, 0x6e\n'
                    ".equ GF, fwd - ROM_BASE\nrom_start:\n"
                    "lgdt [K]\nlgdt [0x6e]\nmov ax, [K]\nmov ax, [GF]\nmov [GF], ax\nmov ax, [GF + bx]\n"
                    "mov ax, [bx + si + 4]\nmov ax, [bx - 2]\nmov ax, [bx + 0xFFFE]\nmov ax, [0xFFFF]\n"
                    "mov ax, [-2]\nmov ax, es:[di]\nmov ax, [ebx + 4]\nmov ax, [ebx + 0x12345]\n"
                    "mov ax, fwd - ROM_BASE\nmov ax, 0xFFFF\nmov al, -1\njmp fwd\njz fwd\n"
                    "LGDT16_32 fwd - rom_start\n"
                    ".byte 0x2e, 0x0f, 0x01, 0x16; .word fwd - ROM_BASE\n"
                    "fwd: .word 0\n.long 0"),
    "bits64": (BASE, ".code64\n.equ C, 36\n.equ LC, lab + C\n"
                     "mov eax, [rip + 0x10]\nlea rax, [rip + lab]\nmov eax, [rip + C]\n"
                     "mov eax, [rip + LC]\nmov eax, [lab]\nmov eax, [0xFFFFFFFF]\nmov eax, [ebx + 4]\n"
                     "mov rax, [rbx + rcx*8 + 16]\nmov rax, -1\nmov rax, 0xFFFFFFFF\npush -1\n"
                     "jmp lab\ncall lab\nlab: nop"),
    # the table has only the last value of a symbol `.set` twice: such symbols are not compared
    "set_twice": (BASE, ".set S, 4\nmov eax, S\nmov eax, [ebx + S]\n.set S, 8\nmov eax, S"),
}


@pytest.mark.parametrize("case", sorted(CORRECT))
def test_correct_operands_pass(case: str) -> None:
    base, source = CORRECT[case]
    checked(source, base)


PROJECT_SOURCES = [FIRMWARE_SOURCE, *sorted((PROJECT / "guests").glob("*.S"))]


@pytest.mark.parametrize("src", PROJECT_SOURCES, ids=[p.name for p in PROJECT_SOURCES])
def test_firmware_and_guests_pass_every_check(src: Path) -> None:
    """Built exactly as vtemu/images.py and the Makefile (`vtemu asm [--rom]`) build them."""
    data = build_firmware(src) if src == FIRMWARE_SOURCE else build_guest(src)
    assert data
