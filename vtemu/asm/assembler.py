"""Assembles preprocessed statements with Keystone and finds the address of every statement.

Keystone returns one blob of bytes and, on error, an error code without a line. vtemu needs
more: the address and size of each statement (for the round-trip check, for symbols, for
debugging guests) and a `file:line` for every failure. The technique:

1. Put a synthetic label `__vtemu_s<i>` before statement i and append `.quad` of all of them
   (plus an end label and every `.equ`/`.set` symbol) after the program. One assembly then
   yields the image followed by a table of addresses, read back from the tail.
2. Assemble the program again without labels and table, and require the same bytes, so the
   labels provably did not change the encoding.
3. When Keystone fails (or silently emits nothing, which it does for some inputs), bisect:
   assemble growing prefixes of the statements, with the labels and symbols of the rest
   defined as placeholders so forward references resolve, until the first failing statement.

`.org` follows GAS: its operand is an offset from the start of the image. Keystone 0.9.2 takes
an absolute address instead (and fails with "Invalid fragment" for an offset), so `.org X` is
rewritten to `.org BASE + (X)`.
"""

import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from types import MappingProxyType

from keystone import (
    KS_ARCH_X86,
    KS_ERR_ASM_FIXUP_INVALID,
    KS_ERR_ASM_MNEMONICFAIL,
    KS_ERR_ASM_SYMBOL_MISSING,
    KS_MODE_16,
    KS_MODE_32,
    KS_MODE_64,
    Ks,
    KsError,
)

from vtemu.asm.directives import expected_data_size
from vtemu.asm.lexer import SYMBOL_RE, first_word, split_top_level, symbol_definition
from vtemu.asm.operands import parse_instruction
from vtemu.asm.preprocess import RESERVED_PREFIX, PreprocessedSource
from vtemu.asm.registers import OPERAND_KEYWORDS, REGISTERS
from vtemu.asm.source import CodeMode, Statement, StatementKind
from vtemu.errors import AssemblyError

_KS_MODES = {CodeMode.BITS16: KS_MODE_16, CodeMode.BITS32: KS_MODE_32, CodeMode.BITS64: KS_MODE_64}
_END_LABEL = f"{RESERVED_PREFIX}end"
_ENTRY = 8  # bytes per table entry (.quad)
_NUMBER = re.compile(r"(0x[0-9a-f]+|0b[01]+|\d+)", re.IGNORECASE)

# Hints for Keystone errors whose cause vtemu knows, keyed by mnemonic or directive.
_FIXUP_HINTS = {
    "ljmp": "Keystone cannot fix up a label in a direct far jump: use LJMP32 / LJMP16_32 from x86.inc",
    "push": "Keystone cannot fix up `push label`: use PUSHD32 label (32-bit code) from x86.inc",
    ".word": "a label's absolute address needs a 32-bit fixup: store a difference of labels "
             "(label - start) or use .long",
    ".byte": "a label's absolute address needs a 32-bit fixup: store a difference of labels "
             "(label - start) or use .long",
}
_MNEMONIC_HINTS = {
    name: "Keystone has no such mnemonic: x86.inc has byte-exact macros for explicit operand sizes"
    for name in ("pushw", "pushd", "retw", "retd", "retfw", "retfd", "lret", "iretw", "pushfw",
                 "popfw", "callw", "calld", "o16", "o32", "data32")
}


def statement_label(index: int) -> str:
    """The synthetic label placed before statement `index`."""
    return f"{RESERVED_PREFIX}s{index}"


@dataclass(frozen=True)
class PlacedStatement:
    """A statement with the address and size Keystone gave it."""

    statement: Statement
    address: int
    size: int

    @property
    def text(self) -> str:
        return self.statement.text

    @property
    def mode(self) -> CodeMode:
        return self.statement.mode

    @property
    def kind(self) -> StatementKind:
        return self.statement.kind

    @property
    def file(self) -> str:
        return self.statement.loc.path

    @property
    def line(self) -> int:
        return self.statement.loc.line


@dataclass(frozen=True)
class AssembledImage:
    """The bytes of an image and, for each statement, where its bytes are."""

    data: bytes
    base: int
    statements: tuple[PlacedStatement, ...]
    symbols: Mapping[str, int]

    @property
    def end(self) -> int:
        return self.base + len(self.data)

    def bytes_of(self, placed: PlacedStatement) -> bytes:
        offset = placed.address - self.base
        return self.data[offset:offset + placed.size]


def assemble(source: PreprocessedSource, base: int) -> AssembledImage:
    """Assemble at `base`; every failure is an AssemblyError naming the statement's line."""
    statements = source.statements
    for statement in statements:
        if not statement.text.isascii():
            raise statement.error(f"non-ASCII text in `{statement.text}` (write it with .byte)")
    program = _Program(source, base)
    symbols = _symbol_names(statements)
    try:
        output = program.run(len(statements), symbols)
    except KsError as error:
        raise _locate(program, symbols, error) from None
    table = program.table(output, len(statements), len(symbols))
    if table is None:
        raise _locate(program, symbols, None)
    data = output[:len(output) - _ENTRY * len(table)]
    image = _placed(statements, data, base, table, symbols)
    for placed in image.statements:
        _require_data_size(placed)
    _require_label_free_encoding(program, image)
    return image


def _symbol_names(statements: Sequence[Statement]) -> list[str]:
    """Names defined by .equ/.set/= (and -D values), whose values the table also records."""
    names: dict[str, None] = {}
    for statement in statements:
        definition = symbol_definition(statement.text)
        if statement.kind is StatementKind.DIRECTIVE and definition is not None:
            names[definition[1]] = None
    return list(names)


class _Program:
    """Keystone source text for the whole program or a prefix of it, and its table."""

    def __init__(self, source: PreprocessedSource, base: int) -> None:
        self.statements = source.statements
        self.main_path = source.main_path
        self.base = base
        self.mode = source.initial_mode
        self._texts = [_keystone_text(s, base) for s in self.statements]

    def lines(self, count: int, symbols: Sequence[str], labels: bool = True) -> list[str]:
        """Statements [0, count) with labels, placeholders for the rest, and the table."""
        lines = [f".code{int(self.mode)}"]
        for index, text in enumerate(self._texts[:count]):
            if labels:
                lines.append(f"{statement_label(index)}:")
            lines.append(text)
        if not labels:
            return lines
        lines.extend(_placeholders(self.statements[count:]))
        entries = [statement_label(i) for i in range(count)] + [_END_LABEL, *symbols]
        return [*lines, f"{_END_LABEL}:", ".quad " + ", ".join(entries)]

    def run(self, count: int, symbols: Sequence[str], labels: bool = True) -> bytes:
        keystone = Ks(KS_ARCH_X86, _KS_MODES[self.mode])
        encoding, _ = keystone.asm("\n".join(self.lines(count, symbols, labels)), self.base,
                                   as_bytes=True)
        return encoding or b""

    def table(self, output: bytes, count: int, symbol_count: int) -> list[int] | None:
        """The addresses read back from the tail, or None when they cannot be right."""
        entries = count + 1 + symbol_count
        start = len(output) - _ENTRY * entries
        if start < 0:
            return None
        table = list(struct.unpack_from(f"<{entries}Q", output, start))
        addresses = table[:count + 1]
        consistent = (addresses[-1] == self.base + start
                      and all(a <= b for a, b in pairwise(addresses))
                      and addresses[0] >= self.base)
        return table if consistent else None

    def fails(self, count: int, symbols: Sequence[str]) -> KsError | bool:
        """Whether the program cut after `count` statements fails: the KsError, True or False."""
        try:
            output = self.run(count, symbols)
        except KsError as error:
            return error
        return self.table(output, count, len(symbols)) is None


def _keystone_text(statement: Statement, base: int) -> str:
    """The statement as Keystone must see it (`.org` and some immediates differ, see below)."""
    word, rest = first_word(statement.text)
    if statement.kind is StatementKind.INSTRUCTION:
        return _unambiguous_immediates(statement.text)
    if word.lower() != ".org":
        return statement.text
    operands = split_top_level(rest, ",")
    target = operands[0]
    if base and _NUMBER.fullmatch(target) and int(target, 0) >= base:
        raise statement.error(f".org takes an offset from the image base {base:#x} (GAS "
                              f"semantics), not an address: write .org {int(target, 0) - base:#x}")
    return ".org " + ", ".join([f"{base:#x} + ({target})", *operands[1:]])


_SYMBOL_IN = re.compile(r"[A-Za-z_.$][\w.$@]*")
_BRANCHES = re.compile(r"j\w+|call|loop\w*|jmp|xbegin")


def _unambiguous_immediates(text: str) -> str:
    """Keystone reads an immediate expression that starts with a number or a unary operator
    and names a symbol (`0x200000 + FLAGS`, `-1 - MASK`, `~BIT`) as a memory operand holding
    only part of it; `+(expression)` it reads as the immediate the source means."""
    source = parse_instruction(text)
    if _BRANCHES.fullmatch(source.mnemonic):
        return text
    operands = list(source.operands)
    changed = False
    for index, expression in enumerate(source.value_operands):
        if expression is None or not _SYMBOL_IN.search(expression):
            continue
        if _SYMBOL_IN.fullmatch(expression) or expression.startswith("+("):
            continue
        operands[index] = operands[index].replace(expression, f"+({expression})")
        changed = True
    if not changed:
        return text
    head = " ".join((*source.prefixes, source.mnemonic))
    return f"{head} {', '.join(operands)}"


def _placeholders(statements: Sequence[Statement]) -> list[str]:
    """Definitions standing in for the labels and symbols of statements not yet assembled."""
    lines: dict[str, None] = {}
    for statement in statements:
        definition = symbol_definition(statement.text)
        if statement.kind is StatementKind.LABEL:
            lines[statement.text] = None
        elif statement.kind is StatementKind.DIRECTIVE and definition is not None:
            lines[f".set {definition[1]}, 0"] = None
    return list(lines)


def _first_failure(count: int, fails: Callable[[int], KsError | bool],
                   verdict: KsError | bool) -> tuple[int, KsError | bool]:
    """Smallest n in [1, count] with fails(n) true, given fails(count) is `verdict` (true)."""
    low, high = 0, count
    while high - low > 1:
        middle = (low + high) // 2
        result = fails(middle)
        if result:
            high, verdict = middle, result
        else:
            low = middle
    return high, verdict


def _locate(program: _Program, symbols: list[str], error: KsError | None) -> AssemblyError:
    """Turn a failure of the whole program into an error at the statement that causes it."""
    statements = program.statements
    everything = program.fails(len(statements), [])
    if everything and not program.fails(0, []):
        index, verdict = _first_failure(len(statements), lambda n: program.fails(n, []), everything)
        return _statement_error(statements[index - 1], verdict, statements)
    if not everything and symbols:
        index, verdict = _first_failure(
            len(symbols), lambda n: program.fails(len(statements), symbols[:n]), error or True)
        name = symbols[index - 1]
        where = next(s for s in statements if (d := symbol_definition(s.text)) and d[1] == name)
        return where.error(f"Keystone cannot compute the value of `{name}`: {_reason(verdict)}")
    return AssemblyError(f"{program.main_path}: Keystone failed on the whole program: "
                         f"{_reason(error or True)}")


def _reason(verdict: KsError | bool) -> str:
    if isinstance(verdict, KsError):
        return str(verdict)
    return "Keystone silently emitted nothing or dropped output (a form it does not support)"


def _statement_error(statement: Statement, verdict: KsError | bool,
                     statements: Sequence[Statement]) -> AssemblyError:
    hint = _hint(statement, verdict, statements)
    return statement.error(f"Keystone cannot assemble `{statement.text}`: {_reason(verdict)}"
                           + (f"; {hint}" if hint else ""))


def _hint(statement: Statement, verdict: KsError | bool, statements: Sequence[Statement]) -> str:
    """What to do about a Keystone error, where vtemu knows the cause (else "")."""
    if not isinstance(verdict, KsError):
        return ""
    mnemonic = first_word(statement.text)[0].lower()
    if verdict.errno == KS_ERR_ASM_SYMBOL_MISSING:
        return _missing_symbol_hint(statement, statements)
    if verdict.errno == KS_ERR_ASM_FIXUP_INVALID:
        return _FIXUP_HINTS.get(mnemonic, "")
    if verdict.errno == KS_ERR_ASM_MNEMONICFAIL and "\\x" in statement.text:
        return "Keystone 0.9.2 rejects \\x escapes in strings: use octal (\\101) or .byte"
    if verdict.errno == KS_ERR_ASM_MNEMONICFAIL:
        return _MNEMONIC_HINTS.get(mnemonic, "")
    return ""


def _missing_symbol_hint(statement: Statement, statements: Sequence[Statement]) -> str:
    """Name the symbols no statement defines, or the definitions Keystone ignored.

    Keystone 0.9.2 silently skips a malformed `.equ` (unless it is the last line), so a
    symbol can be "defined" in the source and still be missing.
    """
    labels = {s.label_name for s in statements if s.kind is StatementKind.LABEL}
    definitions = {d[1]: s for s in statements
                   if s.kind is StatementKind.DIRECTIVE and (d := symbol_definition(s.text))}
    operands = first_word(statement.text)[1]
    names = re.findall(rf"(?<![\w$.]){SYMBOL_RE}", re.sub(r'"(\\.|[^"\\])*"', "", operands))
    names = [n for n in dict.fromkeys(names) if n not in labels and n != "."
             and n.lower() not in REGISTERS and n.lower() not in OPERAND_KEYWORDS]
    undefined = [f"`{n}`" for n in names if n not in definitions]
    ignored = [f"`{n}` (defined at {definitions[n].where})" for n in names if n in definitions]
    hints = [f"undefined symbol {', '.join(undefined)}"] if undefined else []
    if ignored:
        hints.append(f"Keystone ignored the malformed definition of {', '.join(ignored)}")
    return "; ".join(hints)


def _require_label_free_encoding(program: _Program, image: AssembledImage) -> None:
    """The statement labels must not have changed a single byte of the image."""
    plain = program.run(len(program.statements), [], labels=False)
    if plain == image.data:
        return
    offset = next((i for i, (a, b) in enumerate(zip(plain, image.data, strict=False)) if a != b),
                  min(len(plain), len(image.data)))
    culprit = next((p for p in image.statements if p.address + p.size > image.base + offset),
                   image.statements[-1])
    raise culprit.statement.error(f"Keystone encodes `{culprit.text}` differently when vtemu's "
                                  f"statement labels are present (first difference at offset "
                                  f"{offset:#x}); please report this source")


def _require_data_size(placed: PlacedStatement) -> None:
    """Keystone drops malformed data operands without an error; the size gives it away."""
    if placed.kind is not StatementKind.DATA:
        return
    expected = expected_data_size(placed.text)
    if expected is not None and expected != placed.size:
        raise placed.statement.error(f"Keystone silently emitted {placed.size} byte(s) for "
                                     f"`{placed.text}` instead of {expected} (an operand is "
                                     "malformed or out of range)")


def _signed64(value: int) -> int:
    """Symbol values come back as .quad bytes; `.equ DOWN, -4` should read as -4."""
    return value - (1 << 64) if value >> 63 else value


def _placed(statements: Sequence[Statement], image: bytes, base: int, table: list[int],
            symbols: Sequence[str]) -> AssembledImage:
    addresses = table[:len(statements) + 1]
    placed = tuple(PlacedStatement(s, addresses[i], addresses[i + 1] - addresses[i])
                   for i, s in enumerate(statements))
    for statement in placed:
        _require_data_size(statement)
    values = {name: _signed64(value) for name, value in
              zip(symbols, table[len(statements) + 1:], strict=True)}
    values.update((p.statement.label_name, p.address) for p in placed if p.kind is StatementKind.LABEL)
    return AssembledImage(image, base, placed, MappingProxyType(values))
