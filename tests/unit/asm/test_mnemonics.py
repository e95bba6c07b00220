"""Every mnemonic alias the round-trip check allows is one Keystone and Capstone really show."""

import pytest

from tests.unit.asm.helpers import checked, decode, instructions
from vtemu.asm.mnemonics import (
    ALIASES,
    ALIASES_OUTSIDE_LONG_MODE,
    canonical,
    mnemonics_match,
)
from vtemu.asm.source import CodeMode

# source statement, code mode -> the mnemonic Capstone prints for Keystone's encoding
ALIAS_EXAMPLES = [
    ("sal eax, 1", 32, "shl"),
    ("fwait", 32, "wait"),
    ("icebp", 32, "int1"),
    ("ljmp [eax]", 32, "jmp"),
    ("lcall [eax]", 32, "call"),
    ("movsx rax, ebx", 64, "movsxd"),
    ("mov rax, 0x1122334455667788", 64, "movabs"),
    ("sysret", 64, "sysretq"),
    ("sysexit", 64, "sysexitq"),
    ("xchg eax, eax", 32, "nop"),
    ("jz x", 32, "je"), ("jnc x", 32, "jae"), ("jnae x", 32, "jb"), ("jpo x", 32, "jnp"),
    ("jnle x", 32, "jg"), ("setnz al", 32, "setne"), ("cmovc eax, ebx", 32, "cmovb"),
    ("pusha", 16, "pushaw"), ("pushad", 32, "pushal"), ("cbw", 16, "cwde"), ("cwd", 16, "cdq"),
]


@pytest.mark.parametrize("statement, bits, decoded", ALIAS_EXAMPLES)
def test_alias_is_what_capstone_prints_and_the_check_accepts(statement: str, bits: int,
                                                             decoded: str) -> None:
    image = checked(f".code{bits}\n{statement}\nx: nop\n")
    first = instructions(image)[0]
    insn = decode(image.bytes_of(first), bits, first.address)[0]
    assert insn.mnemonic == decoded != statement.split()[0]


def test_every_alias_has_an_example() -> None:
    examples = {s.split()[0] for s, _, _ in ALIAS_EXAMPLES}
    assert set(ALIASES) | set(ALIASES_OUTSIDE_LONG_MODE) <= examples


def test_xchg_is_not_nop_in_64_bit_code() -> None:
    # 90 in 64-bit code does not zero-extend eax; Keystone rightly emits 87 c0 there.
    assert not mnemonics_match("xchg", "nop", CodeMode.BITS64)
    checked(".code64\nxchg eax, eax\n")


@pytest.mark.parametrize("source, decoded", [("inc", "dec"), ("push", "pop"), ("movsq", "movsd"),
                                             ("jz", "jne"), ("iret", "retf")])
def test_different_instructions_do_not_match(source: str, decoded: str) -> None:
    assert not mnemonics_match(source, decoded, CodeMode.BITS32)


@pytest.mark.parametrize("source, expected", [("jz", "je"), ("setnae", "setb"), ("cmovpe", "cmovp"),
                                              ("jmp", "jmp"), ("js", "js"), ("jecxz", "jecxz")])
def test_condition_code_canonical_names(source: str, expected: str) -> None:
    assert canonical(source) == expected
