"""One instruction statement as the round-trip checks see it: source, decoded bytes, symbols.

Every check compares the same three things (what the source says, what Capstone decodes,
and the values of the symbols the source names), so they share this one record instead of
each taking a different argument list.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from capstone import CsInsn

from vtemu.asm.assembler import PlacedStatement
from vtemu.asm.constexpr import ConstExprError, evaluate_with_values
from vtemu.asm.operands import SourceInstruction
from vtemu.asm.source import CodeMode


@dataclass(frozen=True)
class Decoded:
    """An instruction statement: the source as written and the instruction as decoded.

    `values` holds the labels and `.equ` constants whose value is the same at every
    statement (a symbol `.set` twice is left out: the table only knows its last value).
    """

    placed: PlacedStatement
    source: SourceInstruction
    insn: CsInsn
    data: bytes
    values: Mapping[str, int]

    @property
    def mode(self) -> CodeMode:
        return self.placed.mode

    def value_of(self, expression: str) -> int | None:
        """What the source means by `expression`, or None when vtemu cannot tell."""
        try:
            return evaluate_with_values(expression, self.values)
        except ConstExprError:
            return None
