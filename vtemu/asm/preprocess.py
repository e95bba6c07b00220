"""Turns guest source files into a flat list of single statements for Keystone.

Keystone 0.9.2 has no `.include` (it silently emits nothing), no `.ifdef`, cannot strip
trailing `#`/`//` comments, and reports errors without line numbers. This pass does all of
that in Python and hands on statements that each carry their file, line and code mode, so the
assembler can give every statement an address and every error a `file:line`.

Source rules (documented for guest authors):
- `.include "file"` looks next to the including file, then in the include dirs given, then in
  guests/include. Include cycles are errors.
- `.ifdef NAME` / `.ifndef NAME` / `.else` / `.endif` test -D defines and symbols defined
  *earlier* (labels, .equ, .set), as GAS does in its single pass. They must balance within
  each file and each macro body.
- A define `NAME=VALUE` is also the symbol NAME (emitted as `.equ NAME, VALUE`); a define
  without a value (or with an empty one) only exists for `.ifdef`.
- Comments: `#` and `//` up to end of line, `/* */` anywhere (may span lines); never inside
  "strings" or 'c' character literals. `;` separates statements.
- `.macro`/`.endm` and `.rept`/`.endr` are expanded here (see macros.py); `.error "text"`
  stops the build with that text.
- Names starting with `__vtemu_` are reserved for the assembler's statement labels.
"""

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from vtemu.asm.constexpr import ConstExprError, evaluate
from vtemu.asm.directives import (
    MODE_DIRECTIVES,
    SYMBOL_DIRECTIVES,
    directive_kind,
    rejection,
)
from vtemu.asm.lexer import (
    SYMBOL_RE,
    CommentStripper,
    char_literals_as_numbers,
    first_word,
    parse_string_literal,
    split_assignment,
    split_label,
    split_statements,
    symbol_definition,
)
from vtemu.asm.macros import BodyStatement, Macro, MacroParam, parse_macro_header
from vtemu.asm.source import (
    CodeMode,
    MacroFrame,
    SourceLoc,
    Statement,
    StatementKind,
    error_at,
)
from vtemu.errors import AssemblyError

DEFAULT_INCLUDE_DIR = Path(__file__).resolve().parents[2] / "guests" / "include"
RESERVED_PREFIX = "__vtemu_"
DEFINES_PATH = "<command line>"
MAX_MACRO_DEPTH = 64
NO_DEFINES: Mapping[str, str | None] = MappingProxyType({})

_CONDITIONALS = frozenset({".ifdef", ".ifndef", ".else", ".endif"})
_CLOSERS = {".macro": ".endm", ".rept": ".endr"}

Trail = tuple[MacroFrame, ...]


@dataclass(frozen=True)
class PreprocessedSource:
    """The statements of one build in order, ready for the assembler."""

    statements: tuple[Statement, ...]
    initial_mode: CodeMode
    main_path: str


@dataclass
class _Conditional:
    """An open .ifdef/.ifndef: whether its current branch is being assembled."""

    directive: str
    loc: SourceLoc
    trail: Trail
    enclosing_active: bool
    taking: bool
    seen_else: bool = False

    @property
    def active(self) -> bool:
        return self.enclosing_active and self.taking


@dataclass
class _Captured:
    """A statement recorded inside a .macro or .rept body, replayed later."""

    text: str
    loc: SourceLoc
    trail: Trail


@dataclass
class _Capture:
    """An open .macro or .rept whose body is being collected up to its closer."""

    directive: str
    loc: SourceLoc
    trail: Trail
    finish: Callable[[list[_Captured]], None]
    body: list[_Captured] = field(default_factory=list)
    nesting: int = 0


def preprocess(src: Path, defines: Mapping[str, str | None] = NO_DEFINES,
               include_dirs: Sequence[Path] = (),
               initial_mode: CodeMode = CodeMode.BITS32) -> PreprocessedSource:
    """Preprocess the file `src` (see the module docstring for the source rules)."""
    state = _Preprocessor(defines, include_dirs, initial_mode)
    state.run_file(Path(src))
    return state.result(display_path(Path(src)))


def preprocess_text(text: str, path: str = "<source>",
                    defines: Mapping[str, str | None] = NO_DEFINES,
                    include_dirs: Sequence[Path] = (),
                    initial_mode: CodeMode = CodeMode.BITS32) -> PreprocessedSource:
    """Preprocess source held in memory; `path` names it in errors and anchors includes."""
    state = _Preprocessor(defines, include_dirs, initial_mode)
    state.run_text(text, path)
    return state.result(path)


def display_path(path: Path) -> str:
    """How a file is named in messages: relative to the working directory when inside it."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


class _Preprocessor:
    """One preprocessing run; statement handlers are small methods dispatched by first word."""

    def __init__(self, defines: Mapping[str, str | None], include_dirs: Sequence[Path],
                 initial_mode: CodeMode) -> None:
        self._include_dirs = [Path(d) for d in include_dirs] + [DEFAULT_INCLUDE_DIR]
        self._initial_mode = initial_mode
        self._mode = initial_mode
        self._out: list[Statement] = []
        self._symbols: dict[str, tuple[str, SourceLoc]] = {}
        self._constants: dict[str, str] = {}
        self._macros: dict[str, Macro] = {}
        self._conditionals: list[_Conditional] = []
        self._floors: list[int] = []
        self._capture: _Capture | None = None
        self._includes: list[Path] = []
        self._depth = 0
        self._serial = 0
        self._handlers: dict[str, Callable[[str, SourceLoc, Trail], None]] = {
            ".include": self._include,
            ".macro": self._begin_macro,
            ".rept": self._begin_rept,
            ".endm": self._unmatched_closer(".endm"),
            ".endr": self._unmatched_closer(".endr"),
            ".error": self._user_error,
        }
        self._define_all(defines)

    def result(self, main_path: str) -> PreprocessedSource:
        return PreprocessedSource(tuple(self._out), self._initial_mode, main_path)

    # --- files and scopes --------------------------------------------------------------------

    def run_file(self, path: Path) -> None:
        self._file(path, None)

    def run_text(self, text: str, path: str) -> None:
        self._lines(text, path)

    def _file(self, path: Path, included_from: SourceLoc | None, trail: Trail = ()) -> None:
        resolved = path.resolve()
        if resolved in self._includes:
            chain = " -> ".join(display_path(p) for p in [*self._includes, resolved])
            raise error_at(included_from or SourceLoc(str(path), 0), f"include cycle: {chain}", trail)
        text = self._read(path, included_from, trail)
        self._includes.append(resolved)
        self._lines(text, display_path(path))
        self._includes.pop()

    @staticmethod
    def _read(path: Path, included_from: SourceLoc | None, trail: Trail) -> str:
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            if included_from is None:
                raise AssemblyError(f"{path}: cannot read source: {reason}") from None
            raise error_at(included_from, f"cannot read {path}: {reason}", trail) from None

    def _lines(self, text: str, display_path: str) -> None:
        stripper = CommentStripper()
        self._floors.append(len(self._conditionals))
        for number, raw in enumerate(text.splitlines(), 1):
            loc = SourceLoc(display_path, number)
            for statement in split_statements(stripper.strip(raw, loc)):
                self._statement(statement, loc, ())
        stripper.finish()
        self._close_scope(f"end of {display_path}")

    def _close_scope(self, where: str) -> None:
        """Everything opened in a file or macro body must be closed in it."""
        floor = self._floors.pop()
        if self._capture is not None:
            capture, self._capture = self._capture, None
            closer = _CLOSERS[capture.directive]
            raise error_at(capture.loc, f"unterminated {capture.directive} "
                                        f"(no {closer} before {where})", capture.trail)
        if len(self._conditionals) > floor:
            open_if = self._conditionals[-1]
            raise error_at(open_if.loc, f"unterminated {open_if.directive} "
                                        f"(no .endif before {where})", open_if.trail)

    # --- statements --------------------------------------------------------------------------

    def _statement(self, text: str, loc: SourceLoc, trail: Trail) -> None:
        if self._capture is not None:
            self._capture_statement(text, loc, trail)
            return
        text = char_literals_as_numbers(text, loc)
        word, rest = first_word(text)
        directive = word.lower()
        if directive in _CONDITIONALS:
            self._conditional(directive, rest, loc, trail)
            return
        if not self._active:
            return
        label, remainder = split_label(text)
        if label is not None:
            self._claim(label, "label", loc, trail)
            self._emit(f"{label}:", StatementKind.LABEL, loc, trail)
            if remainder:
                self._statement(remainder, loc, trail)
            return
        if directive in self._handlers:
            self._handlers[directive](rest, loc, trail)
        elif word in self._macros:
            self._expand(self._macros[word], rest, loc, trail)
        elif split_assignment(text) is not None:
            self._symbol(text, loc, trail)
        elif directive.startswith("."):
            self._directive(directive, text, loc, trail)
        else:
            self._emit(text, StatementKind.INSTRUCTION, loc, trail)

    def _emit(self, text: str, kind: StatementKind, loc: SourceLoc, trail: Trail) -> None:
        self._out.append(Statement(text, kind, self._mode, loc, trail))

    def _directive(self, directive: str, text: str, loc: SourceLoc, trail: Trail) -> None:
        kind = directive_kind(directive)
        if kind is None:
            raise error_at(loc, rejection(directive), trail)
        if directive in MODE_DIRECTIVES:
            self._mode = MODE_DIRECTIVES[directive]
        if directive in SYMBOL_DIRECTIVES:
            self._symbol(text, loc, trail)
            return
        self._emit(text, kind, loc, trail)

    def _symbol(self, text: str, loc: SourceLoc, trail: Trail) -> None:
        """`.equ`/`.set`/`=`: remembered for .ifdef, duplicates and .rept counts."""
        definition = symbol_definition(text)
        if definition is None:
            raise error_at(loc, f"expected `{first_word(text)[0]} NAME, expression`, got `{text}`", trail)
        directive, name, expression = definition
        self._claim(name, "equ" if directive == ".equ" else "set", loc, trail)
        self._constants[name] = expression
        self._emit(text, StatementKind.DIRECTIVE, loc, trail)

    def _claim(self, name: str, how: str, loc: SourceLoc, trail: Trail) -> None:
        """Record a symbol definition; Keystone's own duplicate errors carry no line."""
        if name.startswith(RESERVED_PREFIX):
            raise error_at(loc, f"`{name}`: names starting with {RESERVED_PREFIX} are reserved "
                                "for the assembler", trail)
        previous = self._symbols.get(name)
        if previous is not None and not (how == "set" == previous[0]):
            raise error_at(loc, f"`{name}` is already defined ({previous[0]} at {previous[1]})", trail)
        self._symbols[name] = (how, loc)

    def _define_all(self, defines: Mapping[str, str | None]) -> None:
        for number, (name, value) in enumerate(defines.items(), 1):
            loc = SourceLoc(DEFINES_PATH, number)
            if not re.fullmatch(SYMBOL_RE, name):
                raise error_at(loc, f"bad define name `{name}`")
            self._claim(name, "define", loc, ())
            if value:
                self._constants[name] = value
                self._emit(f".equ {name}, {value}", StatementKind.DIRECTIVE, loc, ())

    # --- conditionals ------------------------------------------------------------------------

    @property
    def _active(self) -> bool:
        return not self._conditionals or self._conditionals[-1].active

    def _conditional(self, directive: str, operand: str, loc: SourceLoc, trail: Trail) -> None:
        if directive in (".ifdef", ".ifndef"):
            if not re.fullmatch(SYMBOL_RE, operand):
                raise error_at(loc, f"{directive} needs one symbol name, got `{operand}`", trail)
            defined = operand in self._symbols
            self._conditionals.append(_Conditional(directive, loc, trail, self._active,
                                                   defined == (directive == ".ifdef")))
            return
        if operand:
            raise error_at(loc, f"{directive} takes no operand, got `{operand}`", trail)
        floor = self._floors[-1] if self._floors else 0
        if len(self._conditionals) <= floor:
            raise error_at(loc, f"{directive} without .ifdef/.ifndef", trail)
        if directive == ".endif":
            self._conditionals.pop()
            return
        current = self._conditionals[-1]
        if current.seen_else:
            raise error_at(loc, f"second .else for the {current.directive} at {current.loc}", trail)
        current.taking = not current.taking
        current.seen_else = True

    # --- includes, macros, repetition --------------------------------------------------------

    def _include(self, operand: str, loc: SourceLoc, trail: Trail) -> None:
        name = parse_string_literal(operand, loc)
        self._file(self._resolve(name, loc, trail), loc, trail)

    def _resolve(self, name: str, loc: SourceLoc, trail: Trail) -> Path:
        if Path(name).is_absolute():
            candidates = [Path(name)]
        else:
            candidates = [Path(loc.path).parent / name] + [d / name for d in self._include_dirs]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        searched = ", ".join(str(c.parent) for c in candidates)
        raise error_at(loc, f'cannot find include "{name}" (searched {searched})', trail)

    def _begin_macro(self, operand: str, loc: SourceLoc, trail: Trail) -> None:
        name, params = parse_macro_header(operand, loc)
        if name in self._macros:
            raise error_at(loc, f"macro {name} is already defined at {self._macros[name].loc}", trail)

        def finish(body: list[_Captured]) -> None:
            self._define_macro(name, params, body, loc)

        self._capture = _Capture(".macro", loc, trail, finish)

    def _define_macro(self, name: str, params: tuple[MacroParam, ...], body: list[_Captured],
                      loc: SourceLoc) -> None:
        statements = tuple(BodyStatement(line.text, line.loc) for line in body)
        self._macros[name] = Macro(name, params, statements, loc)

    def _begin_rept(self, operand: str, loc: SourceLoc, trail: Trail) -> None:
        try:
            count = evaluate(operand, self._constants)
        except ConstExprError as error:
            raise error_at(loc, f".rept count: {error}", trail) from None
        if count < 0:
            raise error_at(loc, f".rept count is negative ({count})", trail)

        def finish(body: list[_Captured]) -> None:
            for _ in range(count):
                self._floors.append(len(self._conditionals))
                for line in body:
                    self._statement(line.text, line.loc, line.trail)
                self._close_scope(f".endr of the .rept at {loc}")

        self._capture = _Capture(".rept", loc, trail, finish)

    def _capture_statement(self, text: str, loc: SourceLoc, trail: Trail) -> None:
        capture = self._capture
        assert capture is not None
        directive = first_word(text)[0].lower()
        if directive == ".macro" and capture.directive == ".macro":
            raise error_at(loc, f"macro definitions cannot be nested (the open .macro is at "
                                f"{capture.loc})", trail)
        if directive == capture.directive:
            capture.nesting += 1
        elif directive == _CLOSERS[capture.directive]:
            if capture.nesting == 0:
                self._capture = None
                capture.finish(capture.body)
                return
            capture.nesting -= 1
        capture.body.append(_Captured(text, loc, trail))

    def _expand(self, macro: Macro, operand: str, loc: SourceLoc, trail: Trail) -> None:
        if self._depth >= MAX_MACRO_DEPTH:
            raise error_at(loc, f"macro {macro.name} nests deeper than {MAX_MACRO_DEPTH} "
                                "expansions (recursive macro?)", trail)
        self._serial += 1
        body = macro.expand(operand, self._serial, loc, trail)
        self._depth += 1
        self._floors.append(len(self._conditionals))
        for line in body:
            self._statement(line.text, loc, (*trail, MacroFrame(macro.name, line.loc)))
        self._close_scope(f"the end of macro {macro.name}")
        self._depth -= 1

    @staticmethod
    def _unmatched_closer(directive: str) -> Callable[[str, SourceLoc, Trail], None]:
        opener = next(o for o, c in _CLOSERS.items() if c == directive)

        def handler(operand: str, loc: SourceLoc, trail: Trail) -> None:
            raise error_at(loc, f"{directive} without a matching {opener}", trail)

        return handler

    def _user_error(self, operand: str, loc: SourceLoc, trail: Trail) -> None:
        message = parse_string_literal(operand, loc) if operand else ".error"
        raise error_at(loc, message, trail)
