"""Integer expressions vtemu evaluates itself instead of trusting Keystone with them.

Two users: the preprocessor must know a `.rept` count before assembly (vtemu expands `.rept`,
see macros.py for why), and the round-trip check recomputes operand expressions (`[lab + C]`)
from the symbol table, because Keystone 0.9.2 evaluates some of them wrongly. Only integer
literals, names with a known value and C-like integer operators are allowed, evaluated
through Python's `ast` without `eval`.
"""

import ast
import operator
import re
from collections.abc import Callable, Mapping

from vtemu.asm.lexer import SYMBOL_RE



def _c_divide(a: int, b: int) -> int:
    """Division as assemblers do it (toward zero, like C): -7 / 2 is -3, not Python's -4."""
    quotient = abs(a) // abs(b)
    return quotient if (a < 0) == (b < 0) else -quotient


def _c_remainder(a: int, b: int) -> int:
    return a - b * _c_divide(a, b)


_BINARY: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: _c_divide, ast.FloorDiv: _c_divide, ast.Mod: _c_remainder,
    ast.LShift: operator.lshift, ast.RShift: operator.rshift,
    ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
}
_UNARY: dict[type[ast.unaryop], Callable[[int], int]] = {
    ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert,
}

# A one-character literal such as 'A' (escapes are left alone: not evaluated).
_CHARACTER = re.compile(r"'([^'\\])'")
# A symbol not glued to a number (`x10` in `0x10` and `h` in `10h` are not symbols).
_SYMBOL_USE = re.compile(rf"(?<![\w$.]){SYMBOL_RE}")
# GAS and LLVM rank these differently from C (and from each other): an expression mixing one
# of them with another binary operator has no value every assembler agrees on.
_PRECEDENCE_SENSITIVE = frozenset({ast.LShift, ast.RShift, ast.BitAnd, ast.BitOr, ast.BitXor,
                                   ast.Mod})


class ConstExprError(ValueError):
    """The expression is not a constant the preprocessor can compute; str() says why."""


def evaluate(expr: str, names: Mapping[str, str]) -> int:
    """Value of `expr`, where `names` maps symbols to their (unevaluated) expressions."""
    return _evaluate(expr, names, frozenset())


def symbol_names(expr: str) -> list[str]:
    """The symbols an operand expression uses, in order (numbers such as 0x10 are not)."""
    return _SYMBOL_USE.findall(expr)


def evaluate_with_values(expr: str, values: Mapping[str, int]) -> int:
    """Value of an operand expression whose symbols have the given (already known) values.

    Symbols may contain `.` and `$` (not Python names), so each is replaced by a placeholder
    first, and a character literal ('A') by its code. ConstExprError for anything else: an
    unknown name (a register, `.`, a keyword), an escaped character, a number format Python
    does not share, or an operator mix whose precedence differs between assemblers.
    """
    names: dict[str, str] = {}

    def placeholder(match: re.Match[str]) -> str:
        if match.group(0) not in values:
            raise ConstExprError(f"`{match.group(0)}` has no known value")
        key = f"_v{len(names)}"
        names[key] = str(values[match.group(0)])
        return key

    characters = _CHARACTER.sub(lambda match: str(ord(match.group(1))), expr)
    if "'" in characters or '"' in characters:
        raise ConstExprError(f"`{expr}` has an escaped or multi-character literal")
    substituted = _SYMBOL_USE.sub(placeholder, characters).strip()
    try:
        tree = ast.parse(substituted, mode="eval")
    except SyntaxError:
        raise ConstExprError(f"`{expr}` is not an integer expression") from None
    operators = {type(node.op) for node in ast.walk(tree) if isinstance(node, ast.BinOp)}
    if len(operators) > 1 and operators & _PRECEDENCE_SENSITIVE:
        raise ConstExprError(f"`{expr}` mixes operators whose precedence differs between assemblers")
    return _node(tree.body, names, frozenset())


def _evaluate(expr: str, names: Mapping[str, str], resolving: frozenset[str]) -> int:
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        raise ConstExprError(f"`{expr}` is not an integer expression") from None
    return _node(tree.body, names, resolving)


def _node(node: ast.expr, names: Mapping[str, str], resolving: frozenset[str]) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name):
        return _name(node.id, names, resolving)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _node(node.left, names, resolving), _node(node.right, names, resolving)
        try:
            return _BINARY[type(node.op)](left, right)
        except (ZeroDivisionError, ValueError) as error:
            raise ConstExprError(f"cannot compute `{ast.unparse(node)}`: {error}") from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_node(node.operand, names, resolving))
    raise ConstExprError(f"`{ast.unparse(node)}` is not an integer constant")


def _name(name: str, names: Mapping[str, str], resolving: frozenset[str]) -> int:
    if name in resolving:
        raise ConstExprError(f"`{name}` is defined in terms of itself")
    if name not in names:
        raise ConstExprError(f"`{name}` is not a constant known before assembly "
                             "(only -D values and earlier .equ/.set constants are)")
    return _evaluate(names[name], names, resolving | {name})
