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

_BINARY: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.floordiv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.LShift: operator.lshift, ast.RShift: operator.rshift,
    ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
}
_UNARY: dict[type[ast.unaryop], Callable[[int], int]] = {
    ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert,
}


class ConstExprError(ValueError):
    """The expression is not a constant the preprocessor can compute; str() says why."""


def evaluate(expr: str, names: Mapping[str, str]) -> int:
    """Value of `expr`, where `names` maps symbols to their (unevaluated) expressions."""
    return _evaluate(expr, names, frozenset())


# A symbol not glued to a number (`x10` in `0x10` and `h` in `10h` are not symbols).
_SYMBOL_USE = re.compile(rf"(?<![\w$.]){SYMBOL_RE}")
# GAS and LLVM rank these differently from C (and from each other): an expression mixing one
# of them with another binary operator has no value every assembler agrees on.
_PRECEDENCE_SENSITIVE = frozenset({ast.LShift, ast.RShift, ast.BitAnd, ast.BitOr, ast.BitXor,
                                   ast.Mod})


def evaluate_with_values(expr: str, values: Mapping[str, int]) -> int:
    """Value of an operand expression whose symbols have the given (already known) values.

    Symbols may contain `.` and `$` (not Python names), so each is replaced by a placeholder
    first. ConstExprError for anything else: an unknown name (a register, `.`, a keyword),
    a character literal, a number format Python does not share, or an operator mix whose
    precedence differs between assemblers.
    """
    names: dict[str, str] = {}

    def placeholder(match: re.Match[str]) -> str:
        if match.group(0) not in values:
            raise ConstExprError(f"`{match.group(0)}` has no known value")
        key = f"_v{len(names)}"
        names[key] = str(values[match.group(0)])
        return key

    substituted = _SYMBOL_USE.sub(placeholder, expr).strip()
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
