"""Comment stripping and statement splitting must never look inside literals."""

import pytest

from vtemu.asm.lexer import (
    CommentStripper,
    split_label,
    split_statements,
    split_top_level,
    symbol_definition,
)
from vtemu.asm.source import SourceLoc
from vtemu.errors import AssemblyError

LOC = SourceLoc("t.S", 1)


def strip(*lines: str) -> list[str]:
    stripper = CommentStripper()
    result = [stripper.strip(line, SourceLoc("t.S", n)) for n, line in enumerate(lines, 1)]
    stripper.finish()
    return result


@pytest.mark.parametrize("line, expected", [
    ("# whole line", ""),
    ("// whole line", ""),
    ("nop # trailing", "nop"),
    ("nop // trailing", "nop"),
    ("mov eax, 1 /* inline */ ; nop", "mov eax, 1   ; nop"),
    ('.ascii "a # b // c /* d */"', '.ascii "a # b // c /* d */"'),
    ("mov al, '#'  # hash char", "mov al, '#'"),
    ("mov al, '/' // slash", "mov al, '/'"),
    (r'.ascii "quote \" # still string" # comment', r'.ascii "quote \" # still string"'),
])
def test_comments_are_removed_outside_literals(line: str, expected: str) -> None:
    assert strip(line) == [expected]


def test_block_comment_spans_lines() -> None:
    assert strip("nop /* start", "still comment # x", "end */ hlt") == ["nop", "", "hlt"]


def test_unterminated_block_comment_names_its_line() -> None:
    stripper = CommentStripper()
    stripper.strip("nop", SourceLoc("t.S", 1))
    stripper.strip("/* never closed", SourceLoc("t.S", 2))
    with pytest.raises(AssemblyError, match=r"^t\.S:2: unterminated /\* comment$"):
        stripper.finish()


def test_unterminated_string_is_an_error() -> None:
    with pytest.raises(AssemblyError, match=r'^t\.S:1: unterminated string literal'):
        strip('.ascii "no end')


def test_semicolon_separates_statements_but_not_inside_strings() -> None:
    assert split_statements('nop; .ascii "a;b" ;; hlt') == ["nop", '.ascii "a;b"', "hlt"]


def test_commas_inside_brackets_and_parens_do_not_split() -> None:
    assert split_top_level("eax, [ebx+ecx*4], (1, 2)", ",") == ["eax", "[ebx+ecx*4]", "(1, 2)"]


@pytest.mark.parametrize("statement, label, rest", [
    ("start: nop", "start", "nop"),
    ("_start:", "_start", ""),
    (".Lloop: dec ecx", ".Lloop", "dec ecx"),
    ("es: movsb", None, "es: movsb"),
    ("mov eax, fs:[ebx]", None, "mov eax, fs:[ebx]"),
])
def test_labels(statement: str, label: str | None, rest: str) -> None:
    assert split_label(statement) == (label, rest)


@pytest.mark.parametrize("statement, expected", [
    (".equ X, 5", (".equ", "X", "5")),
    (".set Y, X + 1", (".set", "Y", "X + 1")),
    ("Z = 7", ("=", "Z", "7")),
    ("mov eax, 5", None),
])
def test_symbol_definitions(statement: str, expected: tuple[str, str, str] | None) -> None:
    assert symbol_definition(statement) == expected
