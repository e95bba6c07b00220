"""Preprocessor: includes, conditionals, defines, macros, .rept, modes and line mapping."""

from pathlib import Path

import pytest

from tests.unit.asm.helpers import write
from vtemu.asm.preprocess import (
    DEFAULT_INCLUDE_DIR,
    PreprocessedSource,
    preprocess,
    preprocess_text,
)
from vtemu.asm.source import CodeMode, StatementKind
from vtemu.errors import AssemblyError


def texts(source: PreprocessedSource) -> list[str]:
    return [s.text for s in source.statements]


def located(source: PreprocessedSource) -> list[tuple[str, str, int]]:
    return [(s.text, Path(s.loc.path).name, s.loc.line) for s in source.statements]


# --- includes ------------------------------------------------------------------------------

def test_include_is_resolved_next_to_the_including_file(tmp_path: Path) -> None:
    write(tmp_path, "lib/inner.inc", "inc eax\n")
    write(tmp_path, "lib/outer.inc", 'nop\n.include "inner.inc"\n')
    main = write(tmp_path, "main.S", '.include "lib/outer.inc"\nhlt\n')
    assert located(preprocess(main)) == [
        ("nop", "outer.inc", 1), ("inc eax", "inner.inc", 1), ("hlt", "main.S", 2)]


def test_include_dirs_are_searched_after_the_including_directory(tmp_path: Path) -> None:
    write(tmp_path, "dir/x.inc", "cli\n")
    main = write(tmp_path, "src/main.S", '.include "x.inc"\n')
    assert texts(preprocess(main, include_dirs=[tmp_path / "dir"])) == ["cli"]


def test_guests_include_is_the_default_include_dir(tmp_path: Path) -> None:
    main = write(tmp_path, "main.S", '.include "x86.inc"\nRET16\n')
    assert (DEFAULT_INCLUDE_DIR / "x86.inc").is_file()
    assert texts(preprocess(main)) == [".byte 0xC3"]


def test_missing_include_names_the_line(tmp_path: Path) -> None:
    main = write(tmp_path, "main.S", 'nop\n.include "nowhere.inc"\n')
    with pytest.raises(AssemblyError, match=r'main\.S:2: cannot find include "nowhere\.inc"'):
        preprocess(main)


def test_include_cycle_is_detected_with_its_chain(tmp_path: Path) -> None:
    write(tmp_path, "a.inc", '.include "b.inc"\n')
    write(tmp_path, "b.inc", 'nop\n.include "a.inc"\n')
    main = write(tmp_path, "main.S", '.include "a.inc"\n')
    with pytest.raises(AssemblyError, match=r"b\.inc:2: include cycle: .*main\.S -> .*a\.inc -> "
                                            r".*b\.inc -> .*a\.inc$"):
        preprocess(main)


def test_a_file_may_be_included_twice_when_not_recursive(tmp_path: Path) -> None:
    write(tmp_path, "x.inc", "nop\n")
    main = write(tmp_path, "main.S", '.include "x.inc"\n.include "x.inc"\n')
    assert texts(preprocess(main)) == ["nop", "nop"]


def test_missing_main_file_is_an_assembly_error(tmp_path: Path) -> None:
    with pytest.raises(AssemblyError, match=r"nope\.S: cannot read source"):
        preprocess(tmp_path / "nope.S")


# --- conditionals and defines --------------------------------------------------------------

CONDITIONAL = """
.ifdef FAST
  mov eax, 1
.else
  mov eax, 2
  .ifndef QUIET
    out dx, al
  .endif
.endif
"""


@pytest.mark.parametrize("defines, expected", [
    ({}, ["mov eax, 2", "out dx, al"]),
    ({"QUIET": None}, ["mov eax, 2"]),
    ({"FAST": None, "QUIET": None}, ["mov eax, 1"]),
])
def test_ifdef_else_endif(defines: dict[str, str | None], expected: list[str]) -> None:
    assert texts(preprocess_text(CONDITIONAL, defines=defines)) == expected


def test_define_with_value_becomes_a_symbol() -> None:
    source = preprocess_text(".long SIZE\n", defines={"SIZE": "0x40", "FLAG": None})
    assert texts(source) == [".equ SIZE, 0x40", ".long SIZE"]
    assert source.statements[0].loc.path == "<command line>"


def test_ifdef_sees_symbols_defined_earlier() -> None:
    text = ".equ X, 1\n.ifdef X\nnop\n.endif\n.ifdef later\nhlt\n.endif\nlater:\n"
    assert texts(preprocess_text(text)) == [".equ X, 1", "nop", "later:"]


@pytest.mark.parametrize("text, message", [
    (".endif\n", r"t\.S:1: \.endif without \.ifdef/\.ifndef"),
    (".ifdef X\n.else\n.else\n.endif\n", r"t\.S:3: second \.else for the \.ifdef at t\.S:1"),
    ("nop\n.ifndef X\nnop\n", r"t\.S:2: unterminated \.ifndef \(no \.endif before end of t\.S\)"),
    (".ifdef 1X\n.endif\n", r"t\.S:1: \.ifdef needs one symbol name"),
    (".ifdef X\n.endif junk\n", r"t\.S:2: \.endif takes no operand"),
])
def test_conditional_errors(text: str, message: str) -> None:
    with pytest.raises(AssemblyError, match=message):
        preprocess_text(text, "t.S")


def test_conditionals_must_balance_within_each_file(tmp_path: Path) -> None:
    write(tmp_path, "open.inc", ".ifdef X\n")
    main = write(tmp_path, "main.S", '.include "open.inc"\n.endif\n')
    with pytest.raises(AssemblyError, match=r"open\.inc:1: unterminated \.ifdef"):
        preprocess(main)


def test_error_directive_in_active_branch_stops_the_build() -> None:
    text = '.ifndef BOARD\n.error "define BOARD"\n.endif\n'
    assert texts(preprocess_text(text, defines={"BOARD": "1"})) == [".equ BOARD, 1"]
    with pytest.raises(AssemblyError, match=r"^t\.S:2: define BOARD$"):
        preprocess_text(text, "t.S")


# --- statements, labels, symbols, modes ----------------------------------------------------

def test_line_mapping_survives_comments_and_semicolons() -> None:
    text = "# header\n\nstart: nop ; hlt  // two\n/* a\n b */ cli\n"
    assert located(preprocess_text(text, "t.S")) == [
        ("start:", "t.S", 3), ("nop", "t.S", 3), ("hlt", "t.S", 3), ("cli", "t.S", 5)]


def test_statement_kinds() -> None:
    source = preprocess_text("x: nop\n.long 1\n.equ Y, 2\nZ = 3\n.code16\n.org 4\n")
    assert [s.kind for s in source.statements] == [
        StatementKind.LABEL, StatementKind.INSTRUCTION, StatementKind.DATA,
        StatementKind.DIRECTIVE, StatementKind.DIRECTIVE, StatementKind.DIRECTIVE,
        StatementKind.DATA]


def test_code_mode_is_tracked_per_statement() -> None:
    source = preprocess_text("nop\n.code16\ncli\n.code64\nhlt\n.code32\nsti\n")
    modes = {s.text: s.mode for s in source.statements}
    assert (modes["nop"], modes["cli"], modes["hlt"], modes["sti"]) == (
        CodeMode.BITS32, CodeMode.BITS16, CodeMode.BITS64, CodeMode.BITS32)


def test_initial_mode_can_be_chosen() -> None:
    source = preprocess_text("nop\n", initial_mode=CodeMode.BITS16)
    assert source.statements[0].mode is CodeMode.BITS16


@pytest.mark.parametrize("text, message", [
    ("x: nop\nx: hlt\n", r"t\.S:2: `x` is already defined \(label at t\.S:1\)"),
    (".equ A, 1\n.equ A, 2\n", r"t\.S:2: `A` is already defined \(equ at t\.S:1\)"),
    ("__vtemu_s0: nop\n", r"t\.S:1: `__vtemu_s0`: names starting with __vtemu_ are reserved"),
    (".text\n", r"t\.S:1: `\.text` crashes Keystone 0\.9\.2"),
    (".incbin \"f\"\n", r"t\.S:1: `\.incbin` is silently ignored by Keystone"),
    (".if 1\nnop\n.endif\n", r"t\.S:1: `\.if` is not supported.*use \.ifdef"),
    (".weird 1\n", r"t\.S:1: unsupported directive `\.weird`"),
    (".equ nocomma\n", r"t\.S:1: expected `\.equ NAME, expression`"),
])
def test_statement_errors(text: str, message: str) -> None:
    with pytest.raises(AssemblyError, match=message):
        preprocess_text(text, "t.S")


def test_set_may_redefine_a_set_symbol() -> None:
    assert texts(preprocess_text(".set N, 1\n.set N, 2\nN = 3\n")) == [".set N, 1", ".set N, 2", "N = 3"]


def test_define_conflicting_with_source_symbol() -> None:
    with pytest.raises(AssemblyError, match=r"t\.S:1: `X` is already defined \(define at <command line>:1\)"):
        preprocess_text(".equ X, 1\n", "t.S", defines={"X": "2"})


def test_bad_define_name() -> None:
    with pytest.raises(AssemblyError, match=r"<command line>:1: bad define name `2X`"):
        preprocess_text("nop\n", defines={"2X": "1"})


# --- macros and .rept --------------------------------------------------------------------

MACROS = r"""
.macro FAR sel, off
    .byte 0xEA
    .long \off
    .word \sel
.endm
.macro PAD count=4, fill=0x90
    .fill \count, 1, \fill
.endm
.macro LOCAL
L\@: jmp L\@
.endm
FAR 0x08, target
PAD
PAD 2
PAD , 0xCC
LOCAL
LOCAL
"""


def test_macro_expansion_with_defaults_and_unique_labels() -> None:
    assert texts(preprocess_text(MACROS)) == [
        ".byte 0xEA", ".long target", ".word 0x08",
        ".fill 4, 1, 0x90", ".fill 2, 1, 0x90", ".fill 4, 1, 0xCC",
        "L5:", "jmp L5", "L6:", "jmp L6"]


def test_macro_statements_point_at_call_site_and_body() -> None:
    source = preprocess_text(MACROS, "m.S")
    first = source.statements[0]
    assert (first.loc.path, first.loc.line) == ("m.S", 13)
    assert first.where == "m.S:13 (in macro FAR at m.S:3)"


def test_nested_macro_expansion_keeps_the_whole_chain() -> None:
    text = ".macro INNER\nbogus_op\n.endm\n.macro OUTER\nINNER\n.endm\nOUTER\n"
    statement = preprocess_text(text, "n.S").statements[0]
    assert statement.where == "n.S:7 (in macro OUTER at n.S:5, macro INNER at n.S:2)"


@pytest.mark.parametrize("text, message", [
    (".macro M a\n.endm\nM 1, 2\n", r"t\.S:3: macro M takes 1 argument\(s\), got 2"),
    (".macro M a\n.endm\nM\n", r"t\.S:3: macro M: missing argument `a` \(defined at t\.S:1\)"),
    (".macro M\nnop\n", r"t\.S:1: unterminated \.macro \(no \.endm before end of t\.S\)"),
    (".macro M\n.macro N\n.endm\n.endm\n", r"t\.S:2: macro definitions cannot be nested"),
    (".endm\n", r"t\.S:1: \.endm without a matching \.macro"),
    (".macro M\nM\n.endm\nM\n", r"t\.S:4 \(in macro M at t\.S:2.*\): macro M nests deeper than 64"),
    (".macro M\n.endm\n.macro M\n.endm\n", r"t\.S:3: macro M is already defined at t\.S:1"),
    (".macro M a, a\n.endm\n", r"t\.S:1: macro M: parameter `a` listed twice"),
    (".macro M\n.ifdef X\n.endm\nM\n", r"t\.S:4 \(in macro M at t\.S:2\): unterminated \.ifdef "
                                       r"\(no \.endif before the end of macro M\)"),
])
def test_macro_errors(text: str, message: str) -> None:
    with pytest.raises(AssemblyError, match=message):
        preprocess_text(text, "t.S")


def test_rept_repeats_with_each_copy_on_its_source_line() -> None:
    text = ".equ N, 2\n.rept N * 2 - 1\n  inc eax\n  .rept 2\n    nop\n  .endr\n.endr\n"
    source = preprocess_text(text, "r.S")
    assert texts(source)[1:] == ["inc eax", "nop", "nop"] * 3
    assert {s.loc.line for s in source.statements if s.text == "nop"} == {5}


@pytest.mark.parametrize("text, message", [
    (".rept label\nnop\n.endr\n", r"t\.S:1: \.rept count: `label` is not a constant known before assembly"),
    (".rept -1\n.endr\n", r"t\.S:1: \.rept count is negative"),
    (".rept 2\nnop\n", r"t\.S:1: unterminated \.rept"),
    (".rept 1/0\n.endr\n", r"t\.S:1: \.rept count: cannot compute `1 / 0`"),
])
def test_rept_errors(text: str, message: str) -> None:
    with pytest.raises(AssemblyError, match=message):
        preprocess_text(text, "t.S")


def test_rept_count_may_use_a_define_value() -> None:
    assert texts(preprocess_text(".rept COUNT\nnop\n.endr\n", defines={"COUNT": "0x3"})) == [
        ".equ COUNT, 0x3", "nop", "nop", "nop"]
