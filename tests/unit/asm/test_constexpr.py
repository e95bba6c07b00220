"""Operand expressions vtemu evaluates itself (to check Keystone's) and `.rept` arithmetic."""

import pytest

from vtemu.asm.constexpr import ConstExprError, evaluate, evaluate_with_values, symbol_names

VALUES = {"lab": 0x100094, "C": 36, ".Lx": 5, "a$b": 7, "and": 1}


@pytest.mark.parametrize("expr, value", [
    ("lab + C", 0x1000B8),
    ("C - lab", 36 - 0x100094),
    ("-C", -36),
    ("4 - C", -32),
    ("0x10 + lab", 0x1000A4),
    (".Lx + a$b", 12),          # GAS symbols that are not Python names
    ("and + 1", 2),             # nor Python keywords
    ("lab + 'A'", 0x1000D5),    # character literal
    ("3 << 12", 0x3000),        # one precedence-sensitive operator alone is unambiguous
    ("C * 2 + 4", 76),
    ("-7 / 2", -3),             # assemblers divide toward zero
    ("-7 % 2", -1),
])
def test_operand_expression_values(expr: str, value: int) -> None:
    assert evaluate_with_values(expr, VALUES) == value


@pytest.mark.parametrize("expr, reason", [
    ("eax + 4", r"`eax` has no known value"),
    (". + 4", r"`\.` has no known value"),
    ("10h + lab", r"not an integer expression"),
    ("'\\n'", r"escaped or multi-character literal"),
    ("C + 1 << 2", r"mixes operators whose precedence differs"),
    ("C | 1 + 2", r"mixes operators whose precedence differs"),
    ("1f", r"not an integer expression"),
])
def test_expressions_vtemu_cannot_vouch_for_are_refused(expr: str, reason: str) -> None:
    with pytest.raises(ConstExprError, match=reason):
        evaluate_with_values(expr, VALUES)


def test_symbol_names_skip_numbers() -> None:
    assert symbol_names("lab2 - lab + 0x10 + C*4") == ["lab2", "lab", "C"]


def test_rept_arithmetic_divides_toward_zero() -> None:
    assert evaluate("N / 2", {"N": "-7"}) == -3
