"""Guest code as the binary translator sees it: basic blocks of classified instructions.

Capstone's instruction groups do not say which instructions are sensitive (its PRIVILEGE
group misses several, DESIGN.md), so the classes are explicit sets of instruction ids:

* the instructions the VT-x processor already must look at (machine/sites.py: I/O, CPUID,
  MSRs, MOV CR/DR, descriptor tables, INVLPG, VMX instructions...) become callouts into the
  hypervisor; HLT does too;
* MOV to and from CR8 and reads of CR0/CR4 are emulated inline on the translator's data page;
* branches are rewritten: direct ones to translated code, indirect ones through the lookup;
* instructions that leave kernel code for good (IRET, far returns and jumps, SYSRET, SYSEXIT)
  and the software interrupts run as they are and end the block;
* everything else is copied ("ident"), RIP-relative operands adjusted.

A basic block runs from its first instruction to the first one that ends a block, or to
MAX_BLOCK instructions, or to an instruction that cannot be fetched (the block then ends
before it, and reaching it faults in the guest as a fetch would).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable

import capstone
import capstone.x86_const as C
import unicorn.x86_const as U

from vtemu.machine.decode import CodeMode, Decoder, Instruction
from vtemu.machine.sites import SiteKind, classify
from vtemu.machine.translation import MemoryAccess, TranslationFault

MAX_BLOCK = 64


class Shape(Enum):
    IDENT = "ident"
    CALLOUT = "callout"          # a hypervisor service, then the instruction itself if it is native
    HLT = "hlt"
    CR8_WRITE = "mov to cr8"
    CR8_READ = "mov from cr8"
    CR_READ = "mov from cr0/cr4"
    JMP = "jmp"
    JCC = "jcc"
    LOOP = "loop/jcxz"
    CALL = "call"
    RET = "ret"
    JMP_INDIRECT = "jmp indirect"
    CALL_INDIRECT = "call indirect"
    LEAVES = "leaves kernel code"   # IRET, RETF, far JMP, SYSRET, SYSEXIT: run as they are
    TRAP = "software interrupt"     # INT n, INT3, INTO, INT1, UD2: run as they are
    INTERPRET = "interpret"         # far CALL: run once outside the TC


_JCC = {getattr(C, f"X86_INS_{name}") for name in (
    "JO", "JNO", "JB", "JAE", "JE", "JNE", "JBE", "JA", "JS", "JNS", "JP", "JNP", "JL", "JGE",
    "JLE", "JG")}
_LOOPS = {C.X86_INS_LOOP, C.X86_INS_LOOPE, C.X86_INS_LOOPNE, C.X86_INS_JCXZ, C.X86_INS_JECXZ,
          C.X86_INS_JRCXZ}
_LEAVES = {C.X86_INS_IRET, C.X86_INS_IRETD, C.X86_INS_IRETQ, C.X86_INS_RETF, C.X86_INS_RETFQ,
           C.X86_INS_LJMP, C.X86_INS_SYSRET, C.X86_INS_SYSEXIT}
_TRAPS = {C.X86_INS_INT, C.X86_INS_INT3, C.X86_INS_INTO, C.X86_INS_INT1, C.X86_INS_UD2,
          C.X86_INS_UD0, C.X86_INS_UD1}
ENDS_BLOCK = {Shape.JMP, Shape.JCC, Shape.LOOP, Shape.CALL, Shape.RET, Shape.JMP_INDIRECT,
              Shape.CALL_INDIRECT, Shape.LEAVES, Shape.TRAP, Shape.HLT, Shape.INTERPRET}
_CR8 = U.UC_X86_REG_CR8
_CR0_CR4 = {U.UC_X86_REG_CR0, U.UC_X86_REG_CR4}


@dataclass(frozen=True)
class GuestInstruction:
    insn: Instruction
    shape: Shape
    kind: SiteKind | None = None      # for callouts: the processor's class of the instruction
    disp_offset: int = -1             # where a RIP-relative disp32 sits in the bytes

    @property
    def address(self) -> int:
        return self.insn.address

    @property
    def next_address(self) -> int:
        return self.insn.next_address

    @property
    def target(self) -> int:
        """The destination of a direct branch or call."""
        return self.insn.immediates[0] & _MASK[self.insn.mode]


_MASK = {CodeMode.BITS32: 0xFFFF_FFFF, CodeMode.BITS64: 0xFFFF_FFFF_FFFF_FFFF,
         CodeMode.BITS16: 0xFFFF}


def shape_of(insn: Instruction) -> tuple[Shape, SiteKind | None]:
    i = insn.id
    if i == C.X86_INS_MOV and insn.registers:
        registers = insn.registers
        if registers[0] == _CR8:
            return Shape.CR8_WRITE, None
        if len(registers) > 1 and registers[1] == _CR8:
            return Shape.CR8_READ, None
        if len(registers) > 1 and registers[1] in _CR0_CR4:
            return Shape.CR_READ, None
    if i == C.X86_INS_HLT:
        return Shape.HLT, None
    kind = classify(insn)
    if kind is not None and kind not in (SiteKind.SYSCALL, SiteKind.SYSENTER):
        return Shape.CALLOUT, kind
    if i in _JCC:
        return Shape.JCC, None
    if i in _LOOPS:
        return Shape.LOOP, None
    far = _far_indirect(insn)
    if i == C.X86_INS_JMP and not far:
        return (Shape.JMP if insn.immediates else Shape.JMP_INDIRECT), None
    if i == C.X86_INS_CALL and not far:
        return (Shape.CALL if insn.immediates else Shape.CALL_INDIRECT), None
    if i == C.X86_INS_LCALL or (far and i == C.X86_INS_CALL):
        return Shape.INTERPRET, None
    if i == C.X86_INS_RET:
        return Shape.RET, None
    if i in _LEAVES or far or kind in (SiteKind.SYSCALL, SiteKind.SYSENTER):
        return Shape.LEAVES, None
    if i in _TRAPS:
        return Shape.TRAP, None
    return Shape.IDENT, None


def _far_indirect(insn: Instruction) -> bool:
    """FF /3 (CALL m16:xx) and FF /5 (JMP m16:xx): far, whatever name Capstone gives them."""
    raw = insn.raw
    index = opcode_index(raw, insn.mode)
    return raw[index] == 0xFF and index + 1 < len(raw) and (raw[index + 1] >> 3) & 7 in (3, 5)


LEGACY_PREFIXES = frozenset({0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65})


def opcode_index(raw: bytes, mode: CodeMode) -> int:
    """Where the opcode starts: after the legacy prefixes and, in 64-bit code, a REX prefix."""
    index = 0
    while raw[index] in LEGACY_PREFIXES:
        index += 1
    if mode is CodeMode.BITS64 and 0x40 <= raw[index] <= 0x4F:
        index += 1
    return index


class BlockReader:
    """Decodes guest basic blocks through the hypervisor's view of guest-linear memory."""

    def __init__(self, decoder: Decoder, fetch: Callable[[int], bytes]) -> None:
        self._decoder = decoder
        self._fetch = fetch
        self._capstone = {mode: capstone.Cs(capstone.CS_ARCH_X86, cs_mode) for mode, cs_mode in
                          ((CodeMode.BITS32, capstone.CS_MODE_32), (CodeMode.BITS64, capstone.CS_MODE_64))}
        for engine in self._capstone.values():
            engine.detail = True

    def instruction(self, address: int, mode: CodeMode) -> GuestInstruction | None:
        """The instruction at `address`; None if its bytes do not decode. Raises
        TranslationFault when the first byte cannot be fetched."""
        code = self._fetch(address)
        insn = self._decoder.decode(code, address, mode)
        if insn is None:
            return None
        shape, kind = shape_of(insn)
        offset = -1
        if insn.memory is not None and insn.memory.rip_relative:
            offset = next(self._capstone[mode].disasm(insn.raw, address, 1)).disp_offset
        return GuestInstruction(insn, shape, kind, offset)

    def block(self, address: int, mode: CodeMode) -> list[GuestInstruction | None]:
        """The basic block at `address`. A None entry stands for bytes that do not decode
        (translated as an invalid opcode); the list ends early before an unfetchable one."""
        block: list[GuestInstruction | None] = []
        while len(block) < MAX_BLOCK:
            try:
                item = self.instruction(address, mode)
            except TranslationFault:
                if not block:
                    raise
                break
            block.append(item)
            if item is None or item.shape in ENDS_BLOCK:
                break
            address = item.next_address
        return block


def fetches_code(access: MemoryAccess) -> bool:
    return access is MemoryAccess.FETCH
