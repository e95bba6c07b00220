"""The unit the guest toolchain works on: one assembler statement, and where it came from.

Keystone reports errors without line numbers and can silently misencode; everything vtemu does
after preprocessing (addresses, round-trip checks, error messages) is therefore done per
statement, and every statement remembers the file and line a human wrote it on.
"""

from dataclasses import dataclass
from enum import Enum, IntEnum

from vtemu.errors import AssemblyError


class CodeMode(IntEnum):
    """Default operand/address size in effect for a statement (`.code16/.code32/.code64`)."""

    BITS16 = 16
    BITS32 = 32
    BITS64 = 64


class StatementKind(Enum):
    """What a statement produces, which decides how the round-trip check treats it."""

    INSTRUCTION = "instruction"  # exactly one machine instruction: decoded and checked
    DATA = "data"                # bytes that are not an instruction (.byte, .fill, .org, ...)
    DIRECTIVE = "directive"      # no bytes (.equ, .set, .code32, .global)
    LABEL = "label"              # `name:` on its own


@dataclass(frozen=True)
class SourceLoc:
    """A line of a source file, printed the way editors and compilers print it."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class MacroFrame:
    """One macro expansion a statement went through, so errors can point into the macro body."""

    macro: str
    body: SourceLoc


@dataclass(frozen=True)
class Statement:
    """One statement as Keystone will see it, tagged with its origin and code mode."""

    text: str
    kind: StatementKind
    mode: CodeMode
    loc: SourceLoc
    expansion: tuple[MacroFrame, ...] = ()

    @property
    def where(self) -> str:
        """`file:line`, plus the macro chain when the statement came from a macro body."""
        return describe(self.loc, self.expansion)

    @property
    def label_name(self) -> str:
        """The label a LABEL statement defines (its text without the colon)."""
        if self.kind is not StatementKind.LABEL:
            raise ValueError(f"not a label statement: {self.text!r}")
        return self.text[:-1]

    def error(self, message: str) -> AssemblyError:
        """An AssemblyError in the one-line `file:line: message` form the CLI prints."""
        return error_at(self.loc, message, self.expansion)


def describe(loc: SourceLoc, expansion: tuple[MacroFrame, ...] = ()) -> str:
    """`file:line` of the line the user wrote, then the macro bodies it expanded through."""
    if not expansion:
        return str(loc)
    chain = ", ".join(f"macro {frame.macro} at {frame.body}" for frame in expansion)
    return f"{loc} (in {chain})"


def error_at(loc: SourceLoc, message: str, expansion: tuple[MacroFrame, ...] = ()) -> AssemblyError:
    """An AssemblyError in the one-line `file:line: message` form the CLI prints."""
    return AssemblyError(f"{describe(loc, expansion)}: {message}")
