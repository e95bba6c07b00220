"""String-aware scanning of assembler text.

Keystone cannot strip trailing `#` or `//` comments (it reports an "unknown token"), and `;`
separates statements for it rather than starting a comment. Every split vtemu does (comments,
statements, operands, macro arguments) must skip over string and character literals, so the
scanning lives here once.
"""

import re

from vtemu.asm.source import SourceLoc, error_at

_QUOTES = "\"'"
_OPEN = "([{"
_CLOSE = ")]}"

SYMBOL_RE = r"[A-Za-z_.$][\w.$]*"
_LABEL = re.compile(rf"\s*({SYMBOL_RE})\s*:(?!:)")
_ASSIGNMENT = re.compile(rf"\s*({SYMBOL_RE})\s*=(?!=)\s*(\S.*)$")
_SEGMENT_REGISTERS = frozenset({"cs", "ds", "es", "fs", "gs", "ss"})
_INTEGER = re.compile(r"[-+]?(0x[0-9a-f]+|0b[01]+|0|[1-9][0-9]*)", re.IGNORECASE)
_SIMPLE_ESCAPES = frozenset('bfnrt"\\')
_OCTAL = frozenset("01234567")


def quoted_end(text: str, start: int) -> int | None:
    """Index just past the literal opening at text[start], or None when it never closes."""
    quote = text[start]
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    return None


# GAS's character escapes. Keystone 0.9.2 gets \b, \n, \t, \\, \' and \" right in a character
# literal but silently reads '\r' as 'r', '\f' as 'f' and '\0' as '0' (it is right in strings).
_CHAR_ESCAPES = {"b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "\\": 92, "'": 39, '"': 34}


def char_literals_as_numbers(text: str, loc: SourceLoc) -> str:
    """`text` with every escaped character literal ('\r', '\0', '\x41') replaced by its value."""
    out, i = [], 0
    while i < len(text):
        quote = text[i]
        if quote not in "'\"":
            out.append(quote)
            i += 1
            continue
        end = _literal_end(text, i, loc)
        literal = text[i:end]
        if quote == "'" and literal.startswith("'\\"):
            literal = str(_escaped_char_value(literal, loc))
        out.append(literal)
        i = end
    return "".join(out)


def _escaped_char_value(literal: str, loc: SourceLoc) -> int:
    body = literal[2:-1]
    if body in _CHAR_ESCAPES:
        return _CHAR_ESCAPES[body]
    if body and len(body) <= 3 and set(body) <= _OCTAL:
        return int(body, 8) & 0xFF
    if body[:1] in ("x", "X") and re.fullmatch(r"[0-9a-fA-F]{1,2}", body[1:]):
        return int(body[1:], 16)
    raise error_at(loc, f"unknown escape in character literal {literal}")


def _literal_end(text: str, start: int, loc: SourceLoc) -> int:
    """Like quoted_end, but an unterminated literal is the user's error."""
    end = quoted_end(text, start)
    if end is None:
        kind = "string" if text[start] == '"' else "character"
        raise error_at(loc, f"unterminated {kind} literal: {text[start:].strip()}")
    return end


class CommentStripper:
    """Removes `#`, `//` and `/* */` comments line by line; block comments may span lines."""

    def __init__(self) -> None:
        self._open_block: SourceLoc | None = None

    def strip(self, line: str, loc: SourceLoc) -> str:
        """The line without comments; a block comment is replaced by a space, as in C."""
        out: list[str] = []
        i = 0
        while i < len(line):
            if self._open_block is not None:
                end = line.find("*/", i)
                if end < 0:
                    break
                self._open_block = None
                out.append(" ")
                i = end + 2
            elif line[i] in _QUOTES:
                end = _literal_end(line, i, loc)
                out.append(line[i:end])
                i = end
            elif line[i] == "#" or line.startswith("//", i):
                break
            elif line.startswith("/*", i):
                self._open_block = loc
                i += 2
            else:
                out.append(line[i])
                i += 1
        return "".join(out).strip()

    def finish(self) -> None:
        """Called at end of file: a block comment still open there swallowed the rest."""
        if self._open_block is not None:
            raise error_at(self._open_block, "unterminated /* comment")


def split_top_level(text: str, separator: str) -> list[str]:
    """Split on `separator` outside literals, brackets and parentheses; parts are stripped."""
    parts: list[str] = []
    depth = 0
    start = 0
    i = 0
    while i < len(text):
        c = text[i]
        if c in _QUOTES:
            i = quoted_end(text, i) or len(text)
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth = max(depth - 1, 0)
        elif c == separator and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
        i += 1
    parts.append(text[start:].strip())
    return parts


def split_statements(line: str) -> list[str]:
    """The `;`-separated statements of a comment-free line, without empty ones."""
    return [part for part in split_top_level(line, ";") if part]


def first_word(text: str) -> tuple[str, str]:
    """(first whitespace-delimited word, the stripped rest)."""
    parts = text.split(None, 1)
    if not parts:
        return "", ""
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def split_label(statement: str) -> tuple[str | None, str]:
    """(label defined at the start of the statement or None, the rest of the statement)."""
    match = _LABEL.match(statement)
    if match is None or match.group(1).lower() in _SEGMENT_REGISTERS:
        return None, statement
    return match.group(1), statement[match.end():].strip()


def split_assignment(statement: str) -> tuple[str, str] | None:
    """(symbol, expression) for the GAS `NAME = expr` form, else None."""
    match = _ASSIGNMENT.match(statement)
    return (match.group(1), match.group(2).strip()) if match else None


def symbol_definition(statement: str) -> tuple[str, str, str] | None:
    """(directive, symbol, expression) for `.equ S, e`, `.set S, e` or `S = e` (directive `=`)."""
    assignment = split_assignment(statement)
    if assignment is not None:
        return "=", assignment[0], assignment[1]
    word, rest = first_word(statement)
    if word.lower() not in (".equ", ".set"):
        return None
    parts = split_top_level(rest, ",")
    if len(parts) != 2 or not re.fullmatch(SYMBOL_RE, parts[0]) or not parts[1]:
        return None
    return word.lower(), parts[0], parts[1]


def parse_string_literal(text: str, loc: SourceLoc) -> str:
    """The contents of a lone double-quoted operand such as the file of `.include "x.inc"`."""
    text = text.strip()
    if not text.startswith('"') or quoted_end(text, 0) != len(text):
        raise error_at(loc, f'expected a "quoted" string, got `{text}`')
    return text[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")


def integer_literal(text: str) -> int | None:
    """The value of a plain integer literal (decimal, 0x, 0b), else None."""
    text = text.strip()
    return int(text, 0) if _INTEGER.fullmatch(text) else None


def string_literal_length(text: str) -> int | None:
    """Bytes a lone "..." literal stands for, with the escapes Keystone 0.9.2 accepts.

    None when `text` is not one complete literal or uses another escape (Keystone rejects
    `\\x41` and `\\e`; octal `\\101` works).
    """
    text = text.strip()
    if not text.startswith('"') or quoted_end(text, 0) != len(text):
        return None
    body, length, i = text[1:-1], 0, 0
    while i < len(body):
        if body[i] == "\\":
            i = _escape_end(body, i + 1)
            if i < 0:
                return None
        else:
            i += 1
        length += 1
    return length


def _escape_end(body: str, i: int) -> int:
    """Index after the escape whose first character is body[i]; -1 if unknown."""
    if i >= len(body):
        return -1
    if body[i] in _SIMPLE_ESCAPES:
        return i + 1
    if body[i] in _OCTAL:
        end = i
        while end < len(body) and end < i + 3 and body[end] in _OCTAL:
            end += 1
        return end
    return -1
