"""Which assembler directives a vtemu guest may use, and what each one produces.

Keystone 0.9.2 crashes on some directives (`.text` segfaults the process) and silently emits
nothing for others (`.incbin`, `.end` truncates the output, `.ifc`/`.irp` produce nothing).
So vtemu accepts an allow-list of directives measured to work, and rejects the rest with the
reason, instead of letting Keystone fail without a line number or not fail at all.
"""

from vtemu.asm.lexer import (
    first_word,
    integer_literal,
    split_top_level,
    string_literal_length,
)
from vtemu.asm.source import CodeMode, StatementKind

MODE_DIRECTIVES: dict[str, CodeMode] = {
    ".code16": CodeMode.BITS16,
    ".code32": CodeMode.BITS32,
    ".code64": CodeMode.BITS64,
}

# Emit bytes that are not instructions; the round-trip check does not decode them.
DATA_DIRECTIVES = frozenset({
    ".byte", ".word", ".short", ".value", ".2byte", ".int", ".long", ".4byte", ".quad", ".8byte",
    ".octa", ".ascii", ".asciz", ".string", ".fill", ".space", ".skip", ".zero",
    ".balign", ".p2align", ".align", ".org",
})

# Bytes per operand of the fixed-width data directives.
DATA_WIDTHS: dict[str, int] = {
    ".byte": 1, ".word": 2, ".short": 2, ".value": 2, ".2byte": 2, ".int": 4, ".long": 4,
    ".4byte": 4, ".quad": 8, ".8byte": 8, ".octa": 16,
}
_STRING_TERMINATORS = {".ascii": 0, ".asciz": 1, ".string": 1}
_RESERVATIONS = frozenset({".space", ".skip", ".zero"})

# Define symbols: the preprocessor records them (for .ifdef and duplicate detection).
SYMBOL_DIRECTIVES = frozenset({".equ", ".set"})

# Emit nothing and change nothing vtemu tracks.
INERT_DIRECTIVES = frozenset({".global", ".globl", ".intel_syntax"})

# Handled by vtemu's preprocessor; Keystone never sees them.
PREPROCESSOR_DIRECTIVES = frozenset({
    ".include", ".ifdef", ".ifndef", ".else", ".endif", ".macro", ".endm", ".rept", ".endr",
    ".error",
})

_UNSUPPORTED_CONDITIONAL = "is not supported by vtemu's preprocessor; use .ifdef/.ifndef/.else/.endif"
_ONE_SECTION = "is not supported: a flat image has a single section, so remove it"

REJECTED_DIRECTIVES: dict[str, str] = {
    ".text": "crashes Keystone 0.9.2 (segmentation fault); a flat image has a single section, "
             "so remove it",
    ".data": _ONE_SECTION,
    ".bss": _ONE_SECTION,
    ".section": _ONE_SECTION,
    ".end": "makes Keystone silently drop everything after it; remove it",
    ".incbin": "is silently ignored by Keystone; convert the file to .byte lines",
    ".att_syntax": "is not supported: vtemu guests are Intel syntax (the round-trip check parses "
                   "Intel operands)",
    ".irp": "is not supported (Keystone emits nothing for it); use .rept or a macro",
    ".irpc": "is not supported (Keystone emits nothing for it); use .rept or a macro",
    ".if": _UNSUPPORTED_CONDITIONAL,
    ".ifeq": _UNSUPPORTED_CONDITIONAL,
    ".ifne": _UNSUPPORTED_CONDITIONAL,
    ".ifc": _UNSUPPORTED_CONDITIONAL,
    ".ifnc": _UNSUPPORTED_CONDITIONAL,
    ".ifb": _UNSUPPORTED_CONDITIONAL,
    ".ifnb": _UNSUPPORTED_CONDITIONAL,
    ".elseif": _UNSUPPORTED_CONDITIONAL,
}


def directive_kind(name: str) -> StatementKind | None:
    """The kind of statement an allowed Keystone-level directive makes, or None if not allowed."""
    if name in DATA_DIRECTIVES:
        return StatementKind.DATA
    if name in MODE_DIRECTIVES or name in SYMBOL_DIRECTIVES or name in INERT_DIRECTIVES:
        return StatementKind.DIRECTIVE
    return None


def rejection(name: str) -> str:
    """Why a directive is refused, as the tail of a one-line error message."""
    reason = REJECTED_DIRECTIVES.get(name)
    if reason is not None:
        return f"`{name}` {reason}"
    allowed = sorted(DATA_DIRECTIVES | SYMBOL_DIRECTIVES | INERT_DIRECTIVES
                     | PREPROCESSOR_DIRECTIVES | set(MODE_DIRECTIVES))
    return f"unsupported directive `{name}` (vtemu accepts {' '.join(allowed)})"


def expected_data_size(text: str) -> int | None:
    """How many bytes a data statement must produce, when that follows from its text.

    Keystone 0.9.2 silently emits nothing for a malformed or out-of-range data operand
    (`.word 0x12345`, `.long 1 +`) unless it is the very last line, so the assembler compares
    this with what Keystone produced. None when the size depends on symbols or alignment.
    """
    word, rest = first_word(text)
    directive = word.lower()
    operands = split_top_level(rest, ",") if rest else []
    if directive in DATA_WIDTHS:
        return DATA_WIDTHS[directive] * len(operands)
    if directive in _STRING_TERMINATORS:
        lengths = [string_literal_length(op) for op in operands]
        if not lengths or None in lengths:
            return None
        return sum(n + _STRING_TERMINATORS[directive] for n in lengths if n is not None)
    if directive == ".fill":
        return _fill_size(operands)
    if directive in _RESERVATIONS and operands:
        return integer_literal(operands[0])
    return None


def _fill_size(operands: list[str]) -> int | None:
    """`.fill repeat[, size[, value]]` produces repeat * size bytes (size defaults to 1)."""
    if not operands:
        return None
    repeat = integer_literal(operands[0])
    size = integer_literal(operands[1]) if len(operands) > 1 else 1
    return repeat * size if repeat is not None and size is not None else None
