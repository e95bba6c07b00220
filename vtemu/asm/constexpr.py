"""Integer expressions the preprocessor must know before assembly (a `.rept` count).

Keystone evaluates every other expression; this one is needed earlier because `.rept` is
expanded by vtemu (see macros.py for why). Only integer literals, names with a known constant
expression (-D values, `.equ`/`.set` seen so far) and C-like integer operators are allowed,
evaluated through Python's `ast` without `eval`.
"""

import ast
import operator
from collections.abc import Callable, Mapping

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
