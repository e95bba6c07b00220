"""When a source mnemonic and Capstone's decoded mnemonic name the same instruction.

Capstone prints one canonical name per encoding, so a correct encoding of `jz` decodes as
`je`. Every alias below was checked by assembling the source form with Keystone 0.9.2 and
decoding it with Capstone 5.0.9 (tests/unit/asm/test_mnemonics.py repeats that). Mnemonics
that differ only in operand size (`iret`/`iretd`, `pusha`/`pushal`, Capstone's 16-bit `cwde`
for `cbw`) match by size family; opsize.py then checks the size itself.
"""

from vtemu.asm.opsize import family_of
from vtemu.asm.source import CodeMode

# Condition-code synonyms (SDM Vol. 1 Appendix B) and the names Capstone prints for them.
_CONDITION_SYNONYMS = {
    "z": "e", "nz": "ne", "c": "b", "nc": "ae", "nae": "b", "nb": "ae", "na": "be",
    "nbe": "a", "pe": "p", "po": "np", "nge": "l", "nl": "ge", "ng": "le", "nle": "g",
}
_CONDITIONAL_STEMS = ("cmov", "set", "j")

ALIASES: dict[str, frozenset[str]] = {
    "sal": frozenset({"shl"}),
    "fwait": frozenset({"wait"}),
    "icebp": frozenset({"int1"}),
    "ljmp": frozenset({"jmp"}),          # `ljmp [mem]` is jmp m16:32 to Capstone
    "lcall": frozenset({"call"}),
    "movsx": frozenset({"movsxd"}),      # movsx r64, r/m32
    "mov": frozenset({"movabs"}),        # mov r64, imm64 and moffs forms
    "sysret": frozenset({"sysretq"}),    # Keystone emits REX.W in 64-bit code
    "sysexit": frozenset({"sysexitq"}),
}
# `xchg eax, eax` is 90 (nop) outside 64-bit code; in 64-bit code 90 would not zero-extend.
ALIASES_OUTSIDE_LONG_MODE: dict[str, frozenset[str]] = {"xchg": frozenset({"nop"})}


def canonical(mnemonic: str) -> str:
    """The condition-code spelling Capstone uses (`jz` -> `je`), other names unchanged."""
    for stem in _CONDITIONAL_STEMS:
        if mnemonic.startswith(stem) and mnemonic[len(stem):] in _CONDITION_SYNONYMS:
            return stem + _CONDITION_SYNONYMS[mnemonic[len(stem):]]
    return mnemonic


def mnemonics_match(source: str, decoded: str, mode: CodeMode) -> bool:
    """Whether Capstone's `decoded` (prefix words removed) is what `source` asked for."""
    source, decoded = canonical(source.lower()), decoded.lower()
    if source == decoded or decoded in ALIASES.get(source, frozenset()):
        return True
    if mode is not CodeMode.BITS64 and decoded in ALIASES_OUTSIDE_LONG_MODE.get(source, frozenset()):
        return True
    family = family_of(source)
    return family is not None and family is family_of(decoded)
