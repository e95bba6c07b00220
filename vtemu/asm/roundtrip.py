"""Decodes every assembled instruction with Capstone and compares it with its source.

Keystone 0.9.2 misencodes some instructions without any error (see DESIGN.md and opsize.py).
Such bytes decode fine, so a guest would just behave wrongly at run time, far from the cause.
This check runs on every image vtemu builds and turns each misencoding into a one-line
`file:line: Keystone misencoded ...; write ... instead` error. Checks, in order:

1. desync: the statement's bytes must decode as exactly one instruction of exactly that size;
2. mnemonic: Capstone's mnemonic must be the source's (or a verified alias, mnemonics.py);
3. operand size: implicit-size instructions must get the size asked for (opsize.py);
4. far pointer: `ljmp/lcall SEL:OFF` with constant values (numbers, `.equ`) must decode to
   those values (Keystone truncates a 32-bit offset in 16-bit code);
5. memory scale: each `x*N` in brackets must decode as index x with scale N (Keystone drops
   the scale of `[ebx+label*4]` and of `.equ` constants);
6. displacement: `[lab + C]` must decode with displacement lab + C, evaluated with the
   image's symbol table (Keystone keeps only the last symbol in brackets; operand_values.py);
7. address size: no 0x67 prefix the source did not ask for (16-bit code gets one for
   `lgdt [label - BASE]`);
8. values: immediates (which must fit their operand: Keystone truncates `mov ax, 0x12345`)
   and direct branch targets must be the values the source names;
9. operand kinds: no memory operand the source did not write (Keystone reads
   `mov rax, -1 - NAME` as a load).
Data statements (.byte, .long, .ascii, .fill, .balign, .org, ...) are not decoded.
"""

from collections.abc import Callable, Mapping
from functools import cache
from types import MappingProxyType

from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs, CsInsn
from capstone.x86 import X86_OP_IMM, X86_OP_MEM

from vtemu.asm.assembler import AssembledImage, PlacedStatement
from vtemu.asm.decoded import Decoded
from vtemu.asm.lexer import symbol_definition
from vtemu.asm.mnemonics import mnemonics_match
from vtemu.asm.operand_values import check_address_size, check_displacement, check_values
from vtemu.asm.operands import parse_instruction
from vtemu.asm.opsize import Misencoding, check_size
from vtemu.asm.source import CodeMode, StatementKind
from vtemu.errors import AssemblyError

_CS_MODES = {CodeMode.BITS16: CS_MODE_16, CodeMode.BITS32: CS_MODE_32, CodeMode.BITS64: CS_MODE_64}
_AS_BYTES = "its exact bytes with .byte"


@cache
def _capstone(mode: CodeMode) -> Cs:
    decoder = Cs(CS_ARCH_X86, _CS_MODES[mode])
    decoder.detail = True
    return decoder


def check_roundtrip(image: AssembledImage) -> None:
    """Raise AssemblyError at the first instruction whose bytes are not what its source says."""
    values = _fixed_values(image)
    for placed in image.statements:
        if placed.kind is StatementKind.INSTRUCTION:
            _check_statement(image, placed, values)


def _fixed_values(image: AssembledImage) -> Mapping[str, int]:
    """The symbol table without symbols `.set` more than once (it holds only the last value)."""
    defined: dict[str, int] = {}
    for placed in image.statements:
        definition = symbol_definition(placed.text)
        if placed.kind is StatementKind.DIRECTIVE and definition is not None:
            defined[definition[1]] = defined.get(definition[1], 0) + 1
    return MappingProxyType({name: value for name, value in image.symbols.items()
                             if defined.get(name, 1) == 1})


def _check_statement(image: AssembledImage, placed: PlacedStatement,
                     values: Mapping[str, int]) -> None:
    data = image.bytes_of(placed)
    insn, problem = _decode_exactly_one(data, placed)
    if insn is not None:
        decoded = Decoded(placed, parse_instruction(placed.text), insn, data, values)
        problem = next((p for p in (check(decoded) for check in _CHECKS) if p is not None), None)
    if problem is not None:
        raise _misencoded(placed, data, problem)


def _misencoded(placed: PlacedStatement, data: bytes, problem: Misencoding) -> AssemblyError:
    shown = data.hex(" ") if data else "none"
    return placed.statement.error(f"Keystone misencoded `{placed.text}`: {problem.why} "
                                  f"(bytes {shown}); write {problem.workaround} instead")


def _decode_exactly_one(data: bytes, placed: PlacedStatement) -> tuple[CsInsn | None, Misencoding | None]:
    """(the single decoded instruction, None) or (None, the desync)."""
    bits = int(placed.mode)
    valid = f"an instruction valid in {bits}-bit code, or {_AS_BYTES}"
    if not data:
        return None, Misencoding("Keystone emitted no bytes for it", valid)
    decoded = list(_capstone(placed.mode).disasm(data, placed.address))
    if not decoded or decoded[0].address != placed.address:
        return None, Misencoding(f"the bytes do not decode as an instruction in {bits}-bit code", valid)
    if len(decoded) == 1 and decoded[0].size == len(data):
        return decoded[0], None
    shown = "; ".join(f"{i.mnemonic} {i.op_str}".strip() for i in decoded)
    used = sum(i.size for i in decoded)
    tail = "" if used == len(data) else f" and {len(data) - used} undecodable byte(s)"
    return None, Misencoding(f"its {len(data)} bytes decode as {len(decoded)} instruction(s) "
                             f"({shown}){tail}, not one", valid)


def _check_mnemonic(d: Decoded) -> Misencoding | None:
    decoded = d.insn.mnemonic.split()[-1]
    if mnemonics_match(d.source.mnemonic, decoded, d.mode):
        return None
    shown = f"{d.insn.mnemonic} {d.insn.op_str}".strip()
    return Misencoding(f"it decodes as `{shown}`",
                       f"an instruction that exists in {int(d.mode)}-bit code, or {_AS_BYTES}")


def _check_operand_size(d: Decoded) -> Misencoding | None:
    return check_size(d.source, d.insn, d.data, d.mode)


def _check_far_pointer(d: Decoded) -> Misencoding | None:
    far = d.source.far_pointer
    if far is None or d.source.mnemonic not in ("ljmp", "lcall"):
        return None
    wanted = (d.value_of(far.selector), d.value_of(far.offset))
    immediates = tuple(op.imm for op in d.insn.operands if op.type == X86_OP_IMM)
    if None in wanted or len(immediates) != 2 or immediates == wanted:
        return None
    selector, offset = immediates
    why = (f"the far pointer decodes as {selector:#x}:{offset:#x}, not "
           f"{wanted[0]:#x}:{wanted[1]:#x} (the offset does not fit the operand size)")
    if d.mode is CodeMode.BITS16 and d.source.mnemonic == "ljmp":
        return Misencoding(why, f"LJMP16_32 {far.selector}, {far.offset} (x86.inc)")
    return Misencoding(why, f"a far {d.source.mnemonic[1:]} with a 32-bit offset, {_AS_BYTES}")


def _check_scale(d: Decoded) -> Misencoding | None:
    scaled = [(memory, term) for memory in d.source.memory for term in memory.scaled]
    if not scaled:
        return None
    memory_operands = [op for op in d.insn.operands if op.type == X86_OP_MEM]
    base = index = None
    scale = 0
    if memory_operands:
        mem = memory_operands[0].mem
        base, index, scale = d.insn.reg_name(mem.base), d.insn.reg_name(mem.index), mem.scale
    for memory, term in scaled:
        if term.is_register and ((index == term.factor and scale == term.scale)
                                 or (term.scale == 1 and term.factor in (base, index))):
            continue
        why = (f"the source scales `{term.factor}` by {term.scale} but the operand decodes as "
               f"`{d.insn.op_str}` (index {index or 'none'}, scale {scale if index else 'none'})")
        return Misencoding(why, _scale_workaround(memory.registers, term.factor, term.scale,
                                                  term.is_register))
    return None


def _scale_workaround(registers: tuple[str, ...], factor: str, scale: int, is_register: bool) -> str:
    if is_register:
        return _AS_BYTES
    if len(registers) == 1:
        return f"[{factor} + {registers[0]}*{scale}] (a scale applies to an index register only)"
    return f"a register index with the scale, e.g. [{factor} + reg*{scale}]"


def _check_operand_kinds(d: Decoded) -> Misencoding | None:
    """No memory operand where the source wrote none: Keystone turns `mov rax, -1 - NAME` (a
    negated or subtracted symbol) into a load from an address made of part of it."""
    if not d.source.operands:
        return None     # string instructions and the like: their memory operands are implicit
    decoded = sum(1 for op in d.insn.operands if op.type == X86_OP_MEM)
    written = len(d.source.memory)
    if decoded <= written:
        return None
    shown = f"{d.insn.mnemonic} {d.insn.op_str}".strip()
    return Misencoding(f"it decodes as `{shown}`, with a memory operand the source does not have",
                       "the value as one .equ constant (`.equ MASK, -1 - NAME` then `MASK`)")


_CHECKS: tuple[Callable[[Decoded], Misencoding | None], ...] = (
    _check_mnemonic,
    _check_operand_kinds,
    _check_operand_size,
    _check_far_pointer,
    _check_scale,
    check_displacement,
    check_address_size,
    check_values,
)
