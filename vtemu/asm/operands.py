"""Reads an Intel-syntax instruction statement the way a human meant it.

The round-trip check compares what the source asked for (mnemonic, explicit operand size,
far pointer, memory scale, displacement, address size, immediate values) with what Capstone
decodes from Keystone's bytes, so it needs the source side as data: prefixes, mnemonic,
operands, and for memory operands the scaled terms (`ecx*4`, `tbl*4`), the register terms
and the displacement expression left when the registers are taken out (`lab + C`).
"""

import re
from dataclasses import dataclass
from functools import cached_property

from vtemu.asm.lexer import SYMBOL_RE, first_word, integer_literal, split_top_level
from vtemu.asm.registers import (
    GENERAL_REGISTERS,
    GPR16,
    GPR32,
    GPR64,
    OPERAND_KEYWORDS,
    REGISTERS,
    SEGMENT_REGISTERS,
    SIZE_KEYWORDS,
)

# Prefix words that may precede the mnemonic of an Intel-syntax statement.
PREFIX_WORDS = frozenset({
    "lock", "rep", "repe", "repz", "repne", "repnz", "data16",
    "addr16", "addr32", "bnd", "notrack", "xacquire", "xrelease",
})
_SYMBOL = re.compile(SYMBOL_RE)
_BRACKETS = re.compile(r"\[([^\]]*)\]")
_SIZE_KEYWORD = re.compile(r"\b(" + "|".join(SIZE_KEYWORDS) + r")\b", re.IGNORECASE)
_KEYWORDS = re.compile(r"\b(" + "|".join(OPERAND_KEYWORDS) + r")\b", re.IGNORECASE)
# Address size (bits) a register asks for when it appears inside brackets.
_ADDRESS_SIZES = {**dict.fromkeys(GPR16 | {"ip"}, 16), **dict.fromkeys(GPR32 | {"eip"}, 32),
                  **dict.fromkeys(GPR64 | {"rip"}, 64)}


@dataclass(frozen=True)
class ScaledTerm:
    """`factor*scale` inside brackets; `factor` is a register (lowercase) or a symbol."""

    factor: str
    scale: int
    is_register: bool


@dataclass(frozen=True)
class MemoryOperand:
    """The text between `[` and `]`, split into its `+`/`-` terms.

    `register_terms` are the terms that name a register (`ebx`, `ecx*4`) as written, and
    `displacement` is everything else with its signs (`lab + C`, `-4`; `0` when nothing is
    left): the value the source means for the encoded displacement.
    """

    text: str
    terms: tuple[str, ...]
    scaled: tuple[ScaledTerm, ...]
    register_terms: tuple[str, ...]
    displacement: str

    @property
    def registers(self) -> tuple[str, ...]:
        return tuple(t.lower() for t in self.terms if t.lower() in REGISTERS)

    @property
    def address_sizes(self) -> frozenset[int]:
        """Address sizes (bits) the registers in the brackets ask for; empty without registers."""
        names = [t.lower() for t in self.terms] + [s.factor for s in self.scaled if s.is_register]
        return frozenset(_ADDRESS_SIZES[n] for n in names if n in _ADDRESS_SIZES)


@dataclass(frozen=True)
class FarPointer:
    """The `SEL:OFF` operand of a direct far jump or call."""

    selector: str
    offset: str


@dataclass(frozen=True)
class SourceInstruction:
    """An instruction statement split into prefixes, mnemonic and operands."""

    text: str
    prefixes: tuple[str, ...]
    mnemonic: str
    operands: tuple[str, ...]

    @cached_property
    def memory(self) -> tuple[MemoryOperand, ...]:
        return tuple(_memory_operand(m) for op in self.operands for m in _BRACKETS.findall(op))

    @cached_property
    def size_keyword(self) -> int | None:
        """Operand size chosen by `word`/`dword`/`qword` in an operand, if any."""
        for operand in self.operands:
            match = _SIZE_KEYWORD.search(operand)
            if match:
                return SIZE_KEYWORDS[match.group(1).lower()]
        return None

    @cached_property
    def far_pointer(self) -> FarPointer | None:
        if len(self.operands) != 1 or "[" in self.operands[0]:
            return None
        parts = split_top_level(self.operands[0], ":")
        if len(parts) != 2 or parts[0].lower() in SEGMENT_REGISTERS:
            return None
        return FarPointer(parts[0], parts[1])

    @cached_property
    def value_operands(self) -> tuple[str | None, ...]:
        """Per operand, the expression of an immediate or direct branch target, else None.

        `dword 5` -> `5`, `short done` -> `done`; registers, memory and far pointers are None.
        """
        return tuple(_value_expression(op) for op in self.operands)

    def has_operand_in(self, names: frozenset[str]) -> bool:
        """Whether some operand is exactly one of the given register names."""
        return any(op.lower() in names for op in self.operands)

    @property
    def has_general_register(self) -> bool:
        return self.has_operand_in(GENERAL_REGISTERS)

    @property
    def has_segment_register(self) -> bool:
        return self.has_operand_in(SEGMENT_REGISTERS)


def parse_instruction(text: str) -> SourceInstruction:
    """Split `[prefixes] mnemonic operands` (operands at top-level commas)."""
    prefixes: list[str] = []
    mnemonic, rest = first_word(text)
    while mnemonic.lower() in PREFIX_WORDS and rest:
        prefixes.append(mnemonic.lower())
        mnemonic, rest = first_word(rest)
    operands = [o for o in split_top_level(rest, ",") if o] if rest else []
    return SourceInstruction(text, tuple(prefixes), mnemonic.lower(), tuple(operands))


def _memory_operand(inside: str) -> MemoryOperand:
    signed = _signed_terms(inside)
    terms = tuple(term for _, term in signed)
    scaled = tuple(s for s in (_scaled(t) for t in terms) if s is not None)
    registers = [(sign, term) for sign, term in signed if _names_register(term)]
    others = [(sign, term) for sign, term in signed if not _names_register(term)]
    return MemoryOperand(inside.strip(), terms, scaled, tuple(_joined([t]) for t in registers),
                         _joined(others) or "0")


def _signed_terms(expression: str) -> list[tuple[str, str]]:
    """The `+`/`-` separated terms at parenthesis depth 0, each with the sign before it."""
    terms: list[tuple[str, str]] = []
    depth = 0
    sign, current = "+", ""
    for char in expression:
        depth += (char == "(") - (char == ")")
        if char in "+-" and depth == 0:
            terms.append((sign, current.strip()))
            sign, current = char, ""
        else:
            current += char
    terms.append((sign, current.strip()))
    return [(sign, term) for sign, term in terms if term]


def _joined(terms: list[tuple[str, str]]) -> str:
    """`[("+", "lab"), ("-", "C")]` -> `lab - C`; a leading minus stays (`-4`)."""
    text = "".join(f" {sign} {term}" for sign, term in terms).strip()
    return text[2:] if text.startswith("+ ") else text.replace("- ", "-", 1)


def _names_register(term: str) -> bool:
    scaled = _scaled(term)
    return term.lower() in REGISTERS or (scaled is not None and scaled.is_register)


def _value_expression(operand: str) -> str | None:
    """The operand without size/distance keywords, if it is neither register, memory nor far."""
    if "[" in operand or len(split_top_level(operand, ":")) != 1:
        return None
    expression = _KEYWORDS.sub(" ", operand).strip()
    if not expression or expression.lower() in REGISTERS:
        return None
    return expression


def _scaled(term: str) -> ScaledTerm | None:
    """`name*N` or `N*name`; None for anything else (e.g. `4*4` is constant folding)."""
    factors = split_top_level(term, "*")
    if len(factors) != 2:
        return None
    numbers = [integer_literal(f) for f in factors]
    if (numbers[0] is None) == (numbers[1] is None):
        return None
    scale = numbers[0] if numbers[0] is not None else numbers[1]
    name = factors[1] if numbers[0] is not None else factors[0]
    if scale is None or not _SYMBOL.fullmatch(name):
        return None
    is_register = name.lower() in REGISTERS
    return ScaledTerm(name.lower() if is_register else name, scale, is_register)
