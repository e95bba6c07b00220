"""Keystone for translation-cache code, checked: every memory operand must reach the address
the source names.

The TC and its data pages sit at the top of the address space, so their addresses fit a
sign-extended disp32 and the translator writes them as absolute operands (`[0xff...c00008]`).
Keystone 0.9.2 misencodes one such form in 64-bit mode: a load into any register but RAX
(`mov rcx, qword ptr [abs]`) comes out RIP-relative with the absolute address itself as the
displacement. Stores, RAX loads (MOVABS) and 32-bit code are right. Each assembled sequence is
decoded again with Capstone; a RIP-relative operand whose displacement is the source's
absolute address is repaired in place (displacement := address - next instruction), and
any operand that still reaches an address the source does not name is an error, never
silently wrong code.
"""

from __future__ import annotations

import re
import struct

import capstone
from capstone import x86 as X
from keystone import KS_ARCH_X86, KS_MODE_32, KS_MODE_64, Ks

from vtemu.machine.decode import CodeMode

_KS = {CodeMode.BITS32: Ks(KS_ARCH_X86, KS_MODE_32), CodeMode.BITS64: Ks(KS_ARCH_X86, KS_MODE_64)}
_CS = {CodeMode.BITS32: capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32),
       CodeMode.BITS64: capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)}
for _decoder in _CS.values():
    _decoder.detail = True
_MASK = {CodeMode.BITS32: 0xFFFF_FFFF, CodeMode.BITS64: 0xFFFF_FFFF_FFFF_FFFF}
_ABSOLUTE = re.compile(r"\[\s*(0x[0-9a-fA-F]+)\s*\]")


class MisassembledError(AssertionError):
    """Keystone produced an operand that reaches somewhere the source did not say."""


def assemble(mode: CodeMode, source: str, address: int) -> bytes:
    """Machine code for `source` placed at `address`, with its absolute operands verified."""
    code = bytearray(_KS[mode].asm(source, address)[0])
    named = {int(text, 16) & _MASK[mode] for text in _ABSOLUTE.findall(source)}
    for insn in _CS[mode].disasm(bytes(code), address):
        for operand in insn.operands:
            if operand.type == X.X86_OP_MEM and _is_absolute(operand.mem):
                _check(mode, code, address, insn, operand.mem, named)
    return bytes(code)


def _is_absolute(mem) -> bool:
    return mem.index == 0 and mem.base in (0, X.X86_REG_RIP, X.X86_REG_EIP)


def _check(mode: CodeMode, code: bytearray, address: int, insn, mem, named: set[int]) -> None:
    mask = _MASK[mode]
    end = insn.address + insn.size
    reaches = (end + mem.disp) & mask if mem.base else mem.disp & mask
    if reaches in named:
        return
    intended = mem.disp & mask
    if mem.base and intended in named and insn.disp_size == 4:
        field = insn.address - address + insn.disp_offset
        code[field:field + 4] = struct.pack("<i", _signed(intended - end, mode))
        return
    raise MisassembledError(f"{insn.mnemonic} {insn.op_str} at {insn.address:#x} reaches "
                            f"{reaches:#x}, which the source does not name")


def _signed(value: int, mode: CodeMode) -> int:
    value &= _MASK[mode]
    return value - (_MASK[mode] + 1) if value >> (31 if mode is CodeMode.BITS32 else 63) else value
