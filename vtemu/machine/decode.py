"""Decoding guest instructions with Capstone, and evaluating their operands on the live vCPU.

The VMM decodes an instruction when hardware would hand it information Unicorn does not:
the exit qualification of a MOV CR, the instruction information of LGDT, the operands of a
string I/O instruction, the access an MMIO load performs. Decodes are cached by
(address, mode, bytes), so a hot exit site costs one dictionary lookup after the first time.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Callable

import capstone
import capstone.x86_const as C
import unicorn.x86_const as U

MAX_INSN_LENGTH = 15  # SDM Vol. 2A 2.3.11


class CodeMode(IntEnum):
    """Default operand/address size of the code segment (CS.L / CS.D)."""

    BITS16 = 16
    BITS32 = 32
    BITS64 = 64


_CS_MODE = {CodeMode.BITS16: capstone.CS_MODE_16, CodeMode.BITS32: capstone.CS_MODE_32,
            CodeMode.BITS64: capstone.CS_MODE_64}

# Capstone and Unicorn number x86 registers differently; both name them the same way.
CAPSTONE_TO_UNICORN: dict[int, int] = {
    getattr(C, name): getattr(U, "UC_" + name)
    for name in dir(C) if name.startswith("X86_REG_") and hasattr(U, "UC_" + name)
}


@dataclass(frozen=True)
class MemoryOperand:
    segment: int      # Unicorn register id of the segment (DS/SS default applied)
    base: int         # Unicorn register id or 0
    index: int        # Unicorn register id or 0
    scale: int
    disp: int
    size: int         # bytes accessed
    rip_relative: bool


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction: what handlers need, without Capstone's object graph."""

    address: int
    size: int
    mode: CodeMode
    id: int
    mnemonic: str
    op_str: str
    prefixes: tuple[int, ...]
    addr_size: int            # bytes: 2, 4 or 8
    registers: tuple[int, ...]  # Unicorn ids of register operands, in operand order
    immediates: tuple[int, ...]
    memory: MemoryOperand | None
    operand_sizes: tuple[int, ...]
    raw: bytes
    memory_position: int = -1   # index of the memory operand among the operands (0 = destination)

    @property
    def next_address(self) -> int:
        return self.address + self.size

    @property
    def has_rep(self) -> bool:
        return 0xF3 in self.prefixes or 0xF2 in self.prefixes

    def __str__(self) -> str:
        return f"{self.mnemonic} {self.op_str}".strip()


def _segment_default(base_reg: int) -> int:
    """SDM Vol. 1 3.7.4: RSP/RBP-based addressing defaults to SS, everything else to DS."""
    return U.UC_X86_REG_SS if base_reg in _STACK_BASES else U.UC_X86_REG_DS


_STACK_BASES = {getattr(U, f"UC_X86_REG_{name}") for name in ("RSP", "ESP", "SP", "RBP", "EBP", "BP")}


class Decoder:
    """Capstone engines for the three code modes, with a decode cache."""

    def __init__(self) -> None:
        self._engines: dict[CodeMode, capstone.Cs] = {}
        for mode, cs_mode in _CS_MODE.items():
            engine = capstone.Cs(capstone.CS_ARCH_X86, cs_mode)
            engine.detail = True
            self._engines[mode] = engine
        self._cache: dict[tuple[int, CodeMode, bytes], Instruction | None] = {}

    def decode(self, code: bytes, address: int, mode: CodeMode) -> Instruction | None:
        """The instruction at the start of `code`, or None if the bytes do not decode."""
        key = (address, mode, bytes(code[:MAX_INSN_LENGTH]))
        if key not in self._cache:
            self._cache[key] = self._decode(key[2], address, mode)
        return self._cache[key]

    def _decode(self, code: bytes, address: int, mode: CodeMode) -> Instruction | None:
        for insn in self._engines[mode].disasm(code, address, 1):
            return _convert(insn, mode)
        return None


def _convert(insn: capstone.CsInsn, mode: CodeMode) -> Instruction:
    registers: list[int] = []
    immediates: list[int] = []
    sizes: list[int] = []
    memory: MemoryOperand | None = None
    memory_position = -1
    for position, operand in enumerate(insn.operands):
        sizes.append(operand.size)
        if operand.type == C.X86_OP_REG:
            registers.append(CAPSTONE_TO_UNICORN.get(operand.reg, 0))
        elif operand.type == C.X86_OP_IMM:
            immediates.append(operand.imm)
        elif operand.type == C.X86_OP_MEM:
            memory = _memory_operand(operand)
            memory_position = position
    return Instruction(
        address=insn.address, size=insn.size, mode=mode, id=insn.id, mnemonic=insn.mnemonic,
        op_str=insn.op_str, prefixes=tuple(p for p in insn.prefix if p), addr_size=insn.addr_size,
        registers=tuple(registers), immediates=tuple(immediates), memory=memory,
        operand_sizes=tuple(sizes), raw=bytes(insn.bytes), memory_position=memory_position)


def _memory_operand(operand: object) -> MemoryOperand:
    mem = operand.mem  # type: ignore[attr-defined]
    base = CAPSTONE_TO_UNICORN.get(mem.base, 0)
    index = CAPSTONE_TO_UNICORN.get(mem.index, 0)
    rip_relative = mem.base in (C.X86_REG_RIP, C.X86_REG_EIP)
    segment = CAPSTONE_TO_UNICORN[mem.segment] if mem.segment else _segment_default(base)
    return MemoryOperand(segment=segment, base=0 if rip_relative else base, index=index,
                         scale=mem.scale, disp=mem.disp, size=operand.size,  # type: ignore[attr-defined]
                         rip_relative=rip_relative)


def effective_address(insn: Instruction, read_reg: Callable[[int], int]) -> int:
    """Offset of the memory operand within its segment, wrapped to the address size."""
    memory = insn.memory
    if memory is None:
        raise ValueError(f"{insn} has no memory operand")
    offset = memory.disp
    if memory.rip_relative:
        offset += insn.next_address
    if memory.base:
        offset += read_reg(memory.base)
    if memory.index:
        offset += read_reg(memory.index) * memory.scale
    return offset & ((1 << (8 * insn.addr_size)) - 1)
