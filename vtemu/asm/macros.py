"""GAS-style `.macro NAME params` / `.endm`, expanded by vtemu rather than by Keystone.

Keystone 0.9.2 does expand `.macro`, but then one source statement becomes several
instructions: vtemu could no longer give every instruction its own address and source line,
and the round-trip check (one statement = one decoded instruction) would not work. Expanding
here keeps each emitted statement single and lets errors name both the call site and the line
of the macro body.

Supported: parameters with defaults (`p=default`), `\\p` substitution, `\\@` (a number unique
to each expansion, for local labels) and `\\()` (an empty separator, as in `\\p\\()_end`).
Arguments are separated by commas; an empty argument takes the parameter's default.
"""

import re
from dataclasses import dataclass

from vtemu.asm.lexer import SYMBOL_RE, split_top_level
from vtemu.asm.source import MacroFrame, SourceLoc, error_at

_NAME = re.compile(rf"^{SYMBOL_RE}$")
_ESCAPE = re.compile(r"\\(\w+|@|\(\))")


@dataclass(frozen=True)
class MacroParam:
    """A formal parameter; `default` None means the argument is required."""

    name: str
    default: str | None


@dataclass(frozen=True)
class BodyStatement:
    """A statement of a macro (or .rept) body with the line it was written on."""

    text: str
    loc: SourceLoc


@dataclass(frozen=True)
class Macro:
    """A defined macro: its parameters and its body statements."""

    name: str
    params: tuple[MacroParam, ...]
    body: tuple[BodyStatement, ...]
    loc: SourceLoc

    def expand(self, args_text: str, serial: int, call: SourceLoc,
               trail: tuple[MacroFrame, ...] = ()) -> list[BodyStatement]:
        """The body with arguments substituted; `serial` is what `\\@` becomes."""
        values = self._bind(args_text, call, trail)

        def substitute(match: re.Match[str]) -> str:
            token = match.group(1)
            if token == "@":
                return str(serial)
            if token == "()":
                return ""
            return values.get(token, match.group(0))

        return [BodyStatement(_ESCAPE.sub(substitute, line.text), line.loc) for line in self.body]

    def _bind(self, args_text: str, call: SourceLoc,
              trail: tuple[MacroFrame, ...]) -> dict[str, str]:
        """Map parameter names to argument text, applying defaults."""
        args = split_top_level(args_text, ",") if args_text.strip() else []
        if len(args) > len(self.params):
            raise error_at(call, f"macro {self.name} takes {len(self.params)} argument(s), "
                                 f"got {len(args)}: `{args_text}`", trail)
        values: dict[str, str] = {}
        for index, param in enumerate(self.params):
            given = args[index] if index < len(args) else ""
            if given:
                values[param.name] = given
            elif param.default is not None:
                values[param.name] = param.default
            else:
                raise error_at(call, f"macro {self.name}: missing argument `{param.name}` "
                                     f"(defined at {self.loc})", trail)
        return values


def parse_macro_header(text: str, loc: SourceLoc) -> tuple[str, tuple[MacroParam, ...]]:
    """(name, params) from the operand text of `.macro NAME p1, p2=default`."""
    parts = text.split(None, 1)
    if not parts or not _NAME.match(parts[0]):
        raise error_at(loc, f".macro needs a name, got `{text}`")
    params: list[MacroParam] = []
    spec = parts[1] if len(parts) > 1 else ""
    for item in (p for p in split_top_level(spec, ",") if p):
        params.extend(_parse_params(item, loc))
    names = [p.name for p in params]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise error_at(loc, f"macro {parts[0]}: parameter `{duplicates[0]}` listed twice")
    return parts[0], tuple(params)


def _parse_params(item: str, loc: SourceLoc) -> list[MacroParam]:
    """One comma-separated item: `name=default`, or one or more space-separated names."""
    pairs: list[tuple[str, str | None]]
    if "=" in item:
        name, default = (part.strip() for part in item.split("=", 1))
        pairs = [(name, default)]
    else:
        pairs = [(name, None) for name in item.split()]
    for name, _ in pairs:
        if not _NAME.match(name):
            raise error_at(loc, f"bad macro parameter name `{name}`")
    return [MacroParam(name, default) for name, default in pairs]
