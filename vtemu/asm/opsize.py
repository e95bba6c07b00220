"""Implicit operand sizes: the class of Keystone 0.9.2 bugs that silently changes what code does.

For stack and control-transfer instructions without a register operand the operand size is
implied by the code mode, and Keystone often picks the other one: 32-bit `ljmp SEL:OFF`,
`lgdt`, `lidt`, `push ds`, `iret`, `pushf` get a 0x66 prefix; in 16-bit code `call`, `ret`,
`retf`, `push imm` get one; `push dword 5` in 32-bit code becomes a 16-bit push. The bytes
decode fine and the mnemonic matches, so only an operand-size comparison catches them.

What counts as explicitly asking for a size (documented for guest authors):
- a mnemonic that names the size: `iretd`, `iretq`, `pushfd`, `pushfq`, `popfd`, `popfq`,
  `pushad`, `popad`, `retfq`, `cbw`/`cwde`/`cdqe`, `cwd`/`cdq`/`cqo`;
- a `word`/`dword`/`qword` keyword on the operand of push, pop or call;
- a `data16` prefix, which asks for a 16-bit operand (Keystone instead always adds a 0x66,
  which in 16-bit code means 32-bit: that is reported, not silently accepted).
Anything else must get the mode's default size (16/32; in 64-bit code 64 for stack
operations and 32 otherwise). Keystone does not accept pushw/pushd/retfd/o32; x86.inc has
byte-exact macros for those.
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from capstone import CsInsn

from vtemu.asm.operands import SourceInstruction
from vtemu.asm.source import CodeMode

_OPERAND_SIZE_PREFIX = 0x66
LEGACY_PREFIXES = frozenset({0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, 0x66, 0x67})
_REX_W = 0x08


def _always(source: SourceInstruction) -> bool:
    return True


def _push_shape(source: SourceInstruction) -> bool:
    """push imm/label, push sreg and push mem have implicit sizes; push reg names its size."""
    return not source.has_general_register


def _pop_shape(source: SourceInstruction) -> bool:
    return source.has_segment_register or bool(source.memory)


def _near_call_shape(source: SourceInstruction) -> bool:
    return not source.has_general_register and source.far_pointer is None


def _far_pointer_shape(source: SourceInstruction) -> bool:
    return source.far_pointer is not None


@dataclass(frozen=True)
class SizeFamily:
    """Mnemonics that differ only in operand size, and when the implicit-size rule applies."""

    name: str
    sizes: Mapping[str, int | None]   # every spelling (source or Capstone) -> size it names
    consequence: str                  # what the wrong size does, with {actual}/{expected}
    stack: bool = False               # default size in 64-bit code is 64, not 32
    applies: Callable[[SourceInstruction], bool] = _always
    keywords: bool = False            # word/dword/qword choose the size
    long_mode: bool = True            # the rule applies in 64-bit code

    def default_size(self, mode: CodeMode) -> int:
        if mode is CodeMode.BITS64:
            return 64 if self.stack else 32
        return int(mode)


_STACK_SLOT = "it moves {actual_bytes} bytes on the stack instead of {expected_bytes}"
_FAMILIES = (
    SizeFamily("push", {"push": None}, _STACK_SLOT, stack=True, applies=_push_shape, keywords=True),
    SizeFamily("pop", {"pop": None}, _STACK_SLOT, stack=True, applies=_pop_shape, keywords=True),
    SizeFamily("call", {"call": None}, "it pushes a {actual}-bit return address", stack=True,
               applies=_near_call_shape, keywords=True),
    SizeFamily("ret", {"ret": None}, "it pops a {actual}-bit return address", stack=True),
    SizeFamily("retf", {"retf": None, "lret": None, "retfq": 64, "lretq": 64},
               "it pops a {actual}-bit offset and selector"),
    SizeFamily("iret", {"iret": None, "iretd": 32, "iretq": 64},
               "it pops {actual}-bit IP, CS and FLAGS"),
    SizeFamily("pushf", {"pushf": None, "pushfw": 16, "pushfd": 32, "pushfq": 64}, _STACK_SLOT,
               stack=True),
    SizeFamily("popf", {"popf": None, "popfw": 16, "popfd": 32, "popfq": 64}, _STACK_SLOT,
               stack=True),
    SizeFamily("pusha", {"pusha": None, "pushaw": 16, "pushad": 32, "pushal": 32}, _STACK_SLOT,
               long_mode=False),
    SizeFamily("popa", {"popa": None, "popaw": 16, "popad": 32, "popal": 32}, _STACK_SLOT,
               long_mode=False),
    SizeFamily("cbw", {"cbw": 16, "cwde": 32, "cdqe": 64}, "it extends to {actual} bits"),
    SizeFamily("cwd", {"cwd": 16, "cdq": 32, "cqo": 64}, "it extends to {actual} bits"),
    SizeFamily("lgdt", {"lgdt": None}, "with a 16-bit operand it loads only 24 bits of the base",
               long_mode=False),
    SizeFamily("lidt", {"lidt": None}, "with a 16-bit operand it loads only 24 bits of the base",
               long_mode=False),
    SizeFamily("ljmp", {"ljmp": None}, "a {actual}-bit far jump takes a {actual}-bit offset",
               applies=_far_pointer_shape, long_mode=False),
    SizeFamily("lcall", {"lcall": None}, "a {actual}-bit far call takes a {actual}-bit offset",
               applies=_far_pointer_shape, long_mode=False),
)
_BY_MNEMONIC: dict[str, SizeFamily] = {m: f for f in _FAMILIES for m in f.sizes}


def family_of(mnemonic: str) -> SizeFamily | None:
    """The size family a (source or Capstone) mnemonic belongs to."""
    return _BY_MNEMONIC.get(mnemonic)


def effective_size(insn: CsInsn, mode: CodeMode, family: SizeFamily) -> int:
    """The operand size the decoded bytes really use (SDM Vol. 1 3.6, Table 3-4)."""
    has_prefix = insn.prefix[2] == _OPERAND_SIZE_PREFIX
    if mode is CodeMode.BITS16:
        return 32 if has_prefix else 16
    if mode is CodeMode.BITS32:
        return 16 if has_prefix else 32
    if insn.rex & _REX_W:
        return 64
    return 16 if has_prefix else family.default_size(mode)


def requested_size(source: SourceInstruction, mode: CodeMode,
                   family: SizeFamily) -> tuple[int, bool]:
    """(operand size the source asks for, whether it asked explicitly)."""
    size = family.sizes.get(source.mnemonic)
    if size is None and family.keywords:
        size = source.size_keyword
    if size is None and "data16" in source.prefixes:
        size = 16
    if size is not None:
        return size, True
    return family.default_size(mode), False


@dataclass(frozen=True)
class Misencoding:
    """Why Keystone's bytes are wrong, and what the guest author should write instead."""

    why: str
    workaround: str


def check_size(source: SourceInstruction, insn: CsInsn, data: bytes,
               mode: CodeMode) -> Misencoding | None:
    """A Misencoding when the decoded operand size is not the one the source asks for."""
    family = family_of(source.mnemonic)
    if family is None or not family.applies(source):
        return None
    if mode is CodeMode.BITS64 and not family.long_mode:
        return None
    actual = effective_size(insn, mode, family)
    expected, explicit = requested_size(source, mode, family)
    if actual == expected:
        return None
    asked = "the source asks for" if explicit else "the mode default is"
    consequence = family.consequence.format(actual=actual, expected=expected,
                                            actual_bytes=actual // 8, expected_bytes=expected // 8)
    why = f"{actual}-bit operand size where {asked} {expected}-bit ({consequence})"
    return Misencoding(why, suggest(family, source, mode, expected, insn, data))


# --- what to write instead ------------------------------------------------------------------

_SIZED_MNEMONICS: dict[str, dict[int, str]] = {
    "iret": {16: "iret", 32: "iretd", 64: "iretq"},
    "pushf": {16: "pushf", 32: "pushfd", 64: "pushfq"},
    "popf": {16: "popf", 32: "popfd", 64: "popfq"},
}
_PUSH_IMMEDIATE_MACROS = {(16, 16): "PUSHW16", (16, 32): "PUSHD16", (32, 16): "PUSHW32",
                          (32, 32): "PUSHD32"}
_FAR_JUMP_MACROS = {(16, 16): "LJMP16", (16, 32): "LJMP16_32", (32, 32): "LJMP32"}
_SEGMENT_MACROS = {"push": frozenset({"es", "cs", "ss", "ds"}), "pop": frozenset({"es", "ss", "ds"})}
_SIZE_WORDS = re.compile(r"\b(byte|word|dword|qword)(\s+ptr)?\b", re.IGNORECASE)


def suggest(family: SizeFamily, source: SourceInstruction, mode: CodeMode, expected: int,
            insn: CsInsn, data: bytes) -> str:
    """A replacement Keystone encodes correctly: a named macro or mnemonic, else exact bytes."""
    if expected == 64 and mode is not CodeMode.BITS64:
        return "an instruction that exists outside 64-bit code (64-bit operands need .code64)"
    named = _named_replacement(family, source, int(mode), expected)
    if named is not None:
        return named
    if _width_independent(family, source) and not insn.rex and expected != 64:
        fixed = _toggle_operand_size_prefix(data)
        return ".byte " + ", ".join(f"{b:#04x}" for b in fixed)
    return f"the {expected}-bit form's exact bytes with .byte"


def _width_independent(family: SizeFamily, source: SourceInstruction) -> bool:
    """Whether no immediate or offset of this instruction changes width with operand size."""
    if family.name == "push":
        return bool(source.memory) or source.has_segment_register
    if family.name == "call":
        return bool(source.memory)
    return family.name not in ("ljmp", "lcall")


def _named_replacement(family: SizeFamily, source: SourceInstruction, mode: int,
                       expected: int) -> str | None:
    operand = _without_size_keywords(source.operands[0]) if source.operands else ""
    if family.name in _SIZED_MNEMONICS:
        return _SIZED_MNEMONICS[family.name].get(expected)
    if operand.lower() in _SEGMENT_MACROS.get(family.name, frozenset()):
        return f"{family.name.upper()}_{operand.upper()} (x86.inc)"
    if family.name == "push" and not source.memory and not source.has_segment_register:
        macro = _PUSH_IMMEDIATE_MACROS.get((mode, expected))
        return f"{macro} {operand} (x86.inc)" if macro else None
    if family.name == "ljmp" and source.far_pointer is not None:
        macro = _FAR_JUMP_MACROS.get((mode, expected))
        far = source.far_pointer
        return f"{macro} {far.selector}, {far.offset} (x86.inc)" if macro else None
    if family.name in ("lgdt", "lidt") and mode == 32 and len(source.memory) == 1 \
            and not source.memory[0].registers:
        return f"{family.name.upper()}32 {source.memory[0].text} (x86.inc)"
    return _sixteen_bit_transfer(family, source, mode, expected, operand)


def _without_size_keywords(operand: str) -> str:
    """`dword 5` -> `5`: the macros take the bare value, their name carries the size."""
    return _SIZE_WORDS.sub("", operand).strip()


def _sixteen_bit_transfer(family: SizeFamily, source: SourceInstruction, mode: int,
                          expected: int, operand: str) -> str | None:
    """CALL16/RET16/RETF16 for the 16-bit-code control transfers Keystone widens."""
    if mode != 16 or expected != 16:
        return None
    if family.name == "call" and not source.memory:
        return f"CALL16 {operand} (x86.inc)"
    if family.name in ("ret", "retf") and not source.operands:
        return f"{family.name.upper()}16 (x86.inc)"
    return None


def _toggle_operand_size_prefix(data: bytes) -> bytes:
    """The same instruction without its 0x66 prefixes, or with one when it has none.

    That alone fixes the size only for width-independent encodings (ret imm16, sreg pushes,
    lgdt/lidt, iret, pushf/popf, ...) without REX.W, which the caller checks.
    """
    legacy = 0
    while legacy < len(data) and data[legacy] in LEGACY_PREFIXES:
        legacy += 1
    if _OPERAND_SIZE_PREFIX in data[:legacy]:
        return bytes(b for b in data[:legacy] if b != _OPERAND_SIZE_PREFIX) + data[legacy:]
    return bytes([_OPERAND_SIZE_PREFIX]) + data
