"""Operand values: the displacement, address size and immediates the source means.

Keystone 0.9.2 evaluates a bracketed expression with its own small parser, which keeps only
the *last* symbol and drops that symbol's sign, then adds the plain numbers: `[lab + C]`
(C an `.equ`) encodes C, `[C + lab]` encodes lab, `[lab2 - lab]` encodes lab, `[-C]` encodes
+C, in 16-, 32- and 64-bit code, with or without base registers, and for `[rip + lab + C]`.
Outside brackets (immediates, `.equ`, data) expressions are right. In 16-bit code it also
gives a ModRM operand whose displacement is not a number known at that line (a forward or
label-relative symbol) a 32-bit address (0x67 prefix + disp32), and silently truncates
immediates (`mov ax, 0x12345` is `mov ax, 0x2345`). The bytes decode fine, so only a
comparison with the value the source means catches these:

- displacement: each memory operand's non-register terms are evaluated with the symbol
  table and compared with the decoded displacement (for RIP-relative operands, with the
  address the operand reaches), modulo the decoded address size;
- address size: the decoded address size must be the one the registers in the brackets ask
  for, or without registers the mode's (64-bit code may use either for a plain address);
- values: each immediate must fit its operand and equal the source's value, and each
  direct branch must reach the address the source names (modulo the IP width).
Expressions vtemu cannot evaluate (`.`, escaped character literals, `.set` symbols defined
twice, operator mixes whose precedence differs between assemblers) are not checked. Each
error names a replacement that Keystone encodes right (tests/unit/asm/test_operand_values.py
assembles every one): a single symbol (`.equ lab_plus_C, lab + C` and `[ebx + lab_plus_C]`),
or in 16-bit code the [disp16] form written as `.byte ...; .word EXPR`.
"""

import re

from capstone import CsInsn
from capstone.x86 import X86_GRP_BRANCH_RELATIVE, X86_OP_IMM, X86_OP_MEM, X86_REG_EIP, X86_REG_RIP

from vtemu.asm.constexpr import symbol_names
from vtemu.asm.decoded import Decoded
from vtemu.asm.lexer import SYMBOL_RE
from vtemu.asm.operands import MemoryOperand
from vtemu.asm.opsize import LEGACY_PREFIXES, Misencoding
from vtemu.asm.registers import INSTRUCTION_POINTERS
from vtemu.asm.source import CodeMode

_ADDRESS_SIZE_PREFIX = 0x67
_MODRM_DISP32 = 0x05       # mod 00, rm 101: [disp32] in 32-bit addressing (no SIB)
_MODRM_DISP16 = 0x06       # mod 00, rm 110: [disp16] in 16-bit addressing
_MODRM_REG = 0x38
_EXACT_BYTES = "exact bytes with .byte"
_AS_BYTES = f"its {_EXACT_BYTES}"
_KEYSTONE_BRACKETS = "Keystone 0.9.2 keeps only the last symbol in brackets, without its sign"


def _fits(value: int, bits: int) -> bool:
    """Whether `value` is representable in `bits` bits, signed or unsigned (as GAS accepts)."""
    return -(1 << (bits - 1)) <= value < (1 << bits)


def _same_modulo(a: int, b: int, bits: int) -> bool:
    """Equal as the CPU sees them: addresses and IPs wrap, imm8 is sign-extended (-1 == 0xff..)."""
    return (a - b) % (1 << bits) == 0


# --- displacements ---------------------------------------------------------------------------

def check_displacement(d: Decoded) -> Misencoding | None:
    """A Misencoding when a memory operand's displacement is not the value of its expression."""
    decoded = [op.mem for op in d.insn.operands if op.type == X86_OP_MEM]
    if len(decoded) != len(d.source.memory):
        return None
    for memory, mem in zip(d.source.memory, decoded, strict=True):
        wanted = d.value_of(memory.displacement)
        if wanted is None:
            continue
        problem = _compare_displacement(d, memory, mem.base, mem.disp, wanted)
        if problem is not None:
            return problem
    return None


def _compare_displacement(d: Decoded, memory: MemoryOperand, base: int, disp: int,
                          wanted: int) -> Misencoding | None:
    bits = d.insn.addr_size * 8
    relative = base in (X86_REG_RIP, X86_REG_EIP)
    reached = d.insn.address + d.insn.size + disp
    candidates = _meant_displacements(memory, relative, disp, reached)
    if _fits(wanted, bits) and any(_same_modulo(c, wanted, bits) for c in candidates):
        return None
    if relative:
        why = f"the RIP-relative operand reaches {reached:#x}, the source means {wanted:#x}"
    else:
        why = f"the displacement is {disp:#x}, the source means {wanted:#x}"
    if not _fits(wanted, bits):
        why += f", which does not fit a {bits}-bit address"
    if _keystone_keeps_last_symbol(memory.displacement):
        why += f" ({_KEYSTONE_BRACKETS})"
    return Misencoding(why, _displacement_workaround(d, memory, wanted))


def _meant_displacements(memory: MemoryOperand, relative: bool, disp: int,
                         reached: int) -> list[int]:
    """Decoded values the source's expression may stand for.

    GAS reads `[rip + 16]` as the raw displacement and `[rip + label]` as the address reached;
    vtemu cannot tell a numeric `.equ` from a label, so with `rip` written either may match.
    """
    if not relative:
        return [disp]
    if any(r in INSTRUCTION_POINTERS for r in memory.registers):
        return [reached, disp]
    return [reached]


def _keystone_keeps_last_symbol(expression: str) -> bool:
    """Whether the expression has the shape Keystone evaluates wrongly (see module docstring)."""
    names = symbol_names(expression)
    return len(names) > 1 or re.search(rf"-\s*{SYMBOL_RE}", expression) is not None


def _displacement_workaround(d: Decoded, memory: MemoryOperand, wanted: int) -> str:
    if d.mode is CodeMode.BITS16 and not memory.register_terms:
        return _sixteen_bit_workaround(d, memory.displacement, wanted)
    if symbol_names(memory.displacement):
        return _equ_workaround(d, memory)
    field = "sign-extended 32-bit" if d.mode is CodeMode.BITS64 else f"{int(d.mode)}-bit"
    return f"a displacement that fits the {field} field (add the rest to a register first)"


def _equ_workaround(d: Decoded, memory: MemoryOperand) -> str:
    """`.equ NAME, expr; insn [regs + NAME]`: Keystone gets a single symbol right."""
    name = _fresh_name(memory.displacement, d)
    inside = " + ".join([*memory.register_terms, name])
    return f".equ {name}, {memory.displacement}; {d.placed.text.replace(memory.text, inside, 1)}"


def _fresh_name(expression: str, d: Decoded) -> str:
    """A readable symbol for the expression (`lab + C` -> `lab_plus_C`) no one else uses."""
    words = {"+": "plus", "-": "minus", "*": "times", "/": "div"}
    parts = [words.get(token, token) for token in re.findall(rf"{SYMBOL_RE}|\w+|[-+*/]", expression)]
    name = "_".join(parts)
    if not re.fullmatch(SYMBOL_RE, name):
        name = f"at_{name}"
    while name in d.values:
        name += "_"
    return name


# --- 16-bit addresses ----------------------------------------------------------------------

def _sixteen_bit_workaround(d: Decoded, expression: str, wanted: int) -> str:
    """The operand as a 16-bit [disp16] encoding written with .byte/.word."""
    if _fits(wanted, 16):
        return _sixteen_bit_form(d.insn, d.data, expression) or f"the 16-bit-address form's {_EXACT_BYTES}"
    form = _sixteen_bit_form(d.insn, d.data, "OFFSET")
    shown = f" (e.g. {form})" if form else ""
    return (f"an OFFSET below 0x10000 from the segment base{shown}, or name a 32-bit base "
            "register if a 32-bit offset is meant")


def _sixteen_bit_form(insn: CsInsn, data: bytes, expression: str) -> str | None:
    """`.byte ...; .word expression[; .byte ...]`: the instruction with a [disp16] operand.

    Keystone's 0x67 + ModRM [disp32] becomes ModRM [disp16] without the prefix; a moffs or
    16-bit ModRM form keeps its bytes and gets the right displacement. None for other shapes.
    """
    if insn.disp_size == 0:
        return None
    head = bytearray(data[:insn.disp_offset])
    tail = data[insn.disp_offset + insn.disp_size:]
    if insn.addr_size == 4:
        if insn.modrm_offset and (insn.modrm & ~_MODRM_REG) != _MODRM_DISP32:
            return None
        if insn.modrm_offset:
            head[insn.modrm_offset] = (insn.modrm & _MODRM_REG) | _MODRM_DISP16
        head = _without_address_size_prefix(head)
    elif insn.disp_size != 2:
        return None
    parts = [_byte_directive(bytes(head)), f".word {expression}"]
    return "; ".join(parts + ([_byte_directive(tail)] if tail else []))


def _without_address_size_prefix(head: bytearray) -> bytearray:
    legacy = 0
    while legacy < len(head) and head[legacy] in LEGACY_PREFIXES:
        legacy += 1
    prefixes = bytes(head[:legacy]).replace(bytes([_ADDRESS_SIZE_PREFIX]), b"", 1)
    return bytearray(prefixes + head[legacy:])


def _byte_directive(data: bytes) -> str:
    return ".byte " + ", ".join(f"{b:#04x}" for b in data)


# --- address size ----------------------------------------------------------------------------

def check_address_size(d: Decoded) -> Misencoding | None:
    """A Misencoding when Keystone chose an address size the source did not ask for."""
    if not d.source.memory:
        return None
    expected, explicit = _requested_address_size(d)
    actual = d.insn.addr_size * 8
    if expected is None or actual == expected:
        return None
    prefix = " (0x67 prefix)" if d.insn.prefix[3] == _ADDRESS_SIZE_PREFIX else ""
    asked = "the source asks for" if explicit else "the mode default is"
    why = f"{actual}-bit address size{prefix} where {asked} {expected}-bit"
    return Misencoding(why, _address_size_workaround(d, expected))


def _requested_address_size(d: Decoded) -> tuple[int | None, bool]:
    """(address size the source asks for, whether it asked explicitly); None: either is right."""
    sizes = frozenset().union(*(m.address_sizes for m in d.source.memory))
    if len(sizes) == 1:
        return next(iter(sizes)), True
    if sizes:
        return None, True
    for prefix, size in (("addr16", 16), ("addr32", 32)):
        if prefix in d.source.prefixes:
            return size, True
    # A plain address in 64-bit code is right with either size when the displacement is.
    return (None, False) if d.mode is CodeMode.BITS64 else (int(d.mode), False)


def _address_size_workaround(d: Decoded, expected: int) -> str:
    memory = d.source.memory
    if expected == 16 and len(memory) == 1 and not memory[0].register_terms:
        wanted = d.value_of(memory[0].displacement)
        if wanted is not None:
            return _sixteen_bit_workaround(d, memory[0].displacement, wanted)
    return f"the {expected}-bit-address form's {_EXACT_BYTES}"


# --- immediates and branch targets ---------------------------------------------------------

def check_values(d: Decoded) -> Misencoding | None:
    """A Misencoding when an immediate or a direct branch target is not the source's value."""
    if len(d.source.operands) != len(d.insn.operands):
        return None
    branch = d.insn.group(X86_GRP_BRANCH_RELATIVE)
    for expression, op in zip(d.source.value_operands, d.insn.operands, strict=True):
        wanted = d.value_of(expression) if expression is not None and op.type == X86_OP_IMM else None
        if wanted is None:
            continue
        bits = op.size * 8
        if _same_modulo(op.imm, wanted, bits) and (branch or _fits(wanted, bits)):
            continue
        return _value_misencoding(op.imm, wanted, bits, branch)
    return None


def _value_misencoding(got: int, wanted: int, bits: int, branch: bool) -> Misencoding:
    if branch:
        return Misencoding(f"the branch target is {got:#x}, the source means {wanted:#x}",
                           _AS_BYTES)
    why = f"the immediate is {got:#x}, the source means {wanted:#x}"
    if not _fits(wanted, bits):
        return Misencoding(f"{why}, which does not fit the {bits}-bit operand",
                           f"a value that fits {bits} bits")
    return Misencoding(why, _AS_BYTES)
