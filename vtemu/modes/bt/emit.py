"""Translating guest instructions into translation-cache code.

A fragment (a basic block or a superblock of several) is emitted at a known TC address. For
every TC instruction the emitter records a precise-state point: the guest RIP whose state
that instruction boundary holds ("exact"), or None inside a replacement sequence, where a
stop is rolled forward to the next exact point. Sequences are written so that the only
instructions that can fault come first, while the guest state is still that of the
instruction's start; everything after them touches only the translator's own pages.

Replacement sequences are assembled with Keystone at their final address (its RIP-relative
encoding of the data-page operands depends on it); branches and the one-instruction forms
are encoded directly. A direct branch to guest code outside the fragment goes to an exit
stub (a SYSCALL the engine catches: translate the target, then chain the branch to it).
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field

import capstone
import unicorn.x86_const as U

from vtemu.machine.decode import CodeMode
from vtemu.machine.sites import SiteKind
from vtemu.modes.bt import region
from vtemu.modes.bt.assemble import assemble
from vtemu.modes.bt.decode import GuestInstruction, Shape, opcode_index

SYSCALL = b"\x0f\x05"
UD2 = b"\x0f\x0b"
JMP_REL32 = 0xE9
NATIVE_KINDS = {SiteKind.MOV_CR, SiteKind.CLTS, SiteKind.LMSW, SiteKind.PAUSE}
_DISASM = {CodeMode.BITS32: capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32),
           CodeMode.BITS64: capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)}
_UNICORN_NAMES = {getattr(U, name): name[len("UC_X86_REG_"):].lower()
                  for name in dir(U) if name.startswith("UC_X86_REG_")}
_ADDRESS = {CodeMode.BITS32: 0xFFFF_FFFF, CodeMode.BITS64: 0xFFFF_FFFF_FFFF_FFFF}


class Untranslatable(Exception):
    """A guest instruction the translator does not handle (the run ends with this reason)."""


@dataclass(frozen=True)
class Callout:
    """A SYSCALL in the TC standing for a guest instruction the hypervisor performs."""

    kind: str                       # "instruction", "hlt", "gp", "exit", "dispatch"
    instruction: GuestInstruction | None = None
    resume: int = 0                 # TC address after the instruction's translation
    native: int = 0                 # TC address of its ident copy (when the processor runs it)
    target: int = 0                 # guest address, for exit stubs
    branch_field: int | None = None  # the rel32 a chained exit patches
    source: int | None = None       # guest address of the branch that leads to an exit stub


@dataclass
class Fragment:
    guest_entry: int
    tc_entry: int
    code: bytearray = field(default_factory=bytearray)
    points: list[tuple[int, int | None]] = field(default_factory=list)   # (TC address, guest RIP)
    callouts: dict[int, Callout] = field(default_factory=dict)
    guest_pages: set[int] = field(default_factory=set)
    instructions: int = 0
    blocks: int = 0
    labels: dict[int, int] = field(default_factory=dict)   # guest block start -> TC address
    stale: bool = False
    checked: bytes | None = None    # a self-checking fragment: the guest bytes it checks
    body: int = 0                   # and where its translated code starts, past the check

    @property
    def tc_end(self) -> int:
        return self.tc_entry + len(self.code)


class Emitter:
    """Writes one fragment: the blocks in order, then the exit stubs their branches need."""

    def __init__(self, mode: CodeMode, tc_entry: int, guest_entry: int, dispatch: int) -> None:
        self.mode = mode
        self.window = region.window(mode)
        self.dispatch = dispatch
        self.fragment = Fragment(guest_entry, tc_entry)
        self._labels: dict[int, int] = {}            # guest address -> TC address in this fragment
        self._pending: list[tuple[int, int, int]] = []   # (rel32 field, guest target, branch)

    # --- low level ---------------------------------------------------------------------------
    @property
    def here(self) -> int:
        return self.fragment.tc_end

    def _put(self, data: bytes, guest: int | None) -> int:
        at = self.here
        self.fragment.points.append((at, guest))
        self.fragment.code += data
        return at

    def _asm(self, source: str, guest: int | None) -> list[int]:
        """Assemble `source` here. The first instruction's point is `guest`, the others are
        interior; returns the TC address of every instruction, for callers that mark more."""
        start = self.here
        data = assemble(self.mode, source, start)
        addresses = [insn.address for insn in _DISASM[self.mode].disasm(data, start)]
        for index, address in enumerate(addresses):
            self.fragment.points.append((address, guest if index == 0 else None))
        self.fragment.code += data
        return addresses

    def _mark(self, address: int, guest: int) -> None:
        """Make one interior point of the last sequence exact (a callout inside it)."""
        points = self.fragment.points
        for index in range(len(points) - 1, -1, -1):
            if points[index][0] == address:
                points[index] = (address, guest)
                return
        raise AssertionError(f"no instruction at {address:#x}")

    def _branch(self, opcode: bytes, guest_target: int, guest: int | None, source: int) -> None:
        """A rel32 branch to guest code: inside the fragment when it is there, else a stub.
        `source` is the guest branch instruction (for the profile)."""
        self._put(opcode + b"\0\0\0\0", guest)
        self._pending.append((self.here - 4, guest_target, source))

    def self_check(self, guest: int, code: bytes) -> None:
        """A prologue comparing the guest's bytes at `guest` with `code`, the bytes this
        translation was made from (VMware's self-checking translations, for code on pages the
        guest keeps writing): on a mismatch a "check" callout retranslates. Flags and RSP are
        the translator's only between the first and the last instruction of the sequence."""
        stack = "rsp" if self.mode is CodeMode.BITS64 else "esp"
        word = "qword" if self.mode is CodeMode.BITS64 else "dword"
        flags = ("pushfq", "popfq") if self.mode is CodeMode.BITS64 else ("pushfd", "popfd")
        saved, top = self._data(region.SAVED_RSP), self._data(region.STACK_TOP)
        compares = []
        for offset in range(0, len(code), 4):
            chunk = code[offset:offset + 4]
            address = f"{(guest + offset) & _ADDRESS[self.mode]:#x}"
            if len(chunk) == 4:
                compares.append(f"cmp dword ptr [{address}], {struct.unpack('<I', chunk)[0]:#x}; jne bt_check_failed")
            else:
                compares += [f"cmp byte ptr [{(guest + offset + i) & _ADDRESS[self.mode]:#x}], {byte:#x}; "
                             f"jne bt_check_failed" for i, byte in enumerate(chunk)]
        restore = f"{flags[1]}; mov {stack}, {word} ptr [{saved}]"
        self.label(guest)
        addresses = self._asm(
            f"mov {word} ptr [{saved}], {stack}; mov {stack}, {top}; {flags[0]}; " + "; ".join(compares)
            + f"; {restore}; jmp bt_check_passed; bt_check_failed: {restore}; syscall; bt_check_passed: nop",
            guest)
        failed, passed = addresses[-2], addresses[-1]
        self._mark(failed, guest)
        self._mark(passed, guest)
        self.fragment.callouts[failed] = Callout("check", target=guest, resume=failed)
        self.fragment.checked, self.fragment.body = code, passed + 1      # after the NOP

    def label(self, guest: int) -> None:
        self._labels.setdefault(guest, self.here)

    def _data(self, field_offset: int) -> str:
        return f"{(self.window + field_offset) & _ADDRESS[self.mode]:#x}"

    # --- instructions ------------------------------------------------------------------------
    def instruction(self, gi: GuestInstruction | None, address: int, inline: int | None = None) -> None:
        """Translate one guest instruction (None: bytes that do not decode, a #UD). `inline`:
        the guest address the superblock continues with right after this branch."""
        self.fragment.instructions += 1
        if gi is None:
            self._put(UD2, address)
            return
        self.label(gi.address)
        if inline is not None and self._inline_branch(gi, inline):
            return
        handler = getattr(self, "_" + gi.shape.name.lower())
        handler(gi)

    def _inline_branch(self, gi: GuestInstruction, following: int) -> bool:
        """The end of a superblock's block when the path goes on with `following`: a direct
        JMP disappears, a CALL keeps only its push, a Jcc the path takes is inverted."""
        if gi.shape is Shape.JMP and gi.target == following:
            return True
        if gi.shape is Shape.CALL and gi.target == following:
            self._push_return(gi)
            return True
        if gi.shape is Shape.JCC and gi.target == following:
            opcode = bytearray(_jcc_rel32(gi.insn.raw))
            opcode[-1] ^= 1                          # the opposite condition (SDM Vol. 2 Jcc)
            self._branch(bytes(opcode), gi.next_address, gi.address, gi.address)
            return True
        return False

    def _ident(self, gi: GuestInstruction) -> None:
        raw = bytearray(gi.insn.raw)
        if gi.disp_offset >= 0:
            old = struct.unpack_from("<i", raw, gi.disp_offset)[0]
            target = (gi.next_address + old) & _ADDRESS[CodeMode.BITS64]
            new = _signed64((target - (self.here + len(raw))) & _ADDRESS[CodeMode.BITS64])
            if not -2**31 <= new < 2**31:
                raise Untranslatable(f"RIP-relative operand out of the TC's reach at {gi.address:#x}")
            struct.pack_into("<i", raw, gi.disp_offset, new)
        self._put(bytes(raw), gi.address)

    def _callout(self, gi: GuestInstruction) -> None:
        at = self._put(SYSCALL, gi.address)
        native = self.here
        if gi.kind in NATIVE_KINDS:
            self._ident(gi)
        self.fragment.callouts[at] = Callout("instruction", gi, resume=self.here, native=native)

    def _hlt(self, gi: GuestInstruction) -> None:
        at = self._put(SYSCALL, gi.address)
        self.fragment.callouts[at] = Callout("hlt", gi, resume=self.here)

    def _cr8_write(self, gi: GuestInstruction) -> None:
        register = self._name(gi.insn.registers[1])
        if register == "rsp":
            at = self._put(SYSCALL, gi.address)          # rare: let the hypervisor check it
            self.fragment.callouts[at] = Callout("gp", gi, resume=self.here)
            return
        saved, vtpr = self._data(region.SAVED_RSP), self._data(region.VTPR)
        top = self._data(region.STACK_TOP)
        # SDM Vol. 2 MOV CR: bits 63:4 of CR8 are reserved (#GP(0)). The comparison needs
        # the flags, which are saved on the translator's own stack, never the guest's.
        addresses = self._asm(
            f"mov qword ptr [{saved}], rsp; mov rsp, {top}; pushfq; cmp {register}, 15; ja bt_bad; "
            f"popfq; mov rsp, qword ptr [{saved}]; mov qword ptr [{vtpr}], {register}; jmp bt_done; "
            f"bt_bad: popfq; mov rsp, qword ptr [{saved}]; syscall; bt_done:", gi.address)
        fault = addresses[-1]
        self._mark(fault, gi.address)
        self.fragment.callouts[fault] = Callout("gp", gi, resume=self.here)

    def _cr8_read(self, gi: GuestInstruction) -> None:
        register = self._name(gi.insn.registers[0])
        self._asm(f"mov {register}, qword ptr [{self._data(region.VTPR)}]", gi.address)

    def _cr_read(self, gi: GuestInstruction) -> None:
        destination, source = gi.insn.registers[:2]
        field_offset = region.GUEST_CR0 if source == _UC_CR0 else region.GUEST_CR4
        width = "qword" if self.mode is CodeMode.BITS64 else "dword"
        self._asm(f"mov {self._name(destination)}, {width} ptr [{self._data(field_offset)}]", gi.address)

    def _jmp(self, gi: GuestInstruction) -> None:
        self._branch(bytes([JMP_REL32]), gi.target, gi.address, gi.address)

    def _jcc(self, gi: GuestInstruction) -> None:
        self._branch(_jcc_rel32(gi.insn.raw), gi.target, gi.address, gi.address)

    def _loop(self, gi: GuestInstruction) -> None:
        raw = bytearray(gi.insn.raw)
        raw[-1] = 5                                     # over the fall-through jump below
        self._put(bytes(raw), gi.address)
        self._branch(bytes([JMP_REL32]), gi.next_address, gi.next_address, gi.address)
        self._branch(bytes([JMP_REL32]), gi.target, gi.target, gi.address)

    def _call(self, gi: GuestInstruction) -> None:
        self._push_return(gi)
        self._branch(bytes([JMP_REL32]), gi.target, gi.target, gi.address)

    def _push_return(self, gi: GuestInstruction) -> None:
        """PUSH of the guest's return address: the stack holds guest addresses, never TC ones."""
        value = gi.next_address
        if self.mode is CodeMode.BITS64 and not -2**31 <= _signed64(value) < 2**31:
            raise Untranslatable(f"call at {gi.address:#x}: return address beyond a sign-extended imm32")
        if gi.insn.prefixes and 0x66 in gi.insn.prefixes:
            raise Untranslatable(f"16-bit call at {gi.address:#x}")
        self._put(b"\x68" + struct.pack("<I", value & 0xFFFF_FFFF), gi.address)

    def _ret(self, gi: GuestInstruction) -> None:
        width = "qword" if self.mode is CodeMode.BITS64 else "dword"
        stack = "rsp" if self.mode is CodeMode.BITS64 else "esp"
        source = f"pop {width} ptr [{self._data(region.TARGET)}]"
        if gi.insn.immediates:
            source += f"; lea {stack}, [{stack} + {gi.insn.immediates[0]}]"
        self._asm(source + f"; jmp {self.dispatch:#x}", gi.address)

    def _jmp_indirect(self, gi: GuestInstruction) -> None:
        self._target_of_indirect(gi)
        self._asm(f"jmp {self.dispatch:#x}", None)

    def _call_indirect(self, gi: GuestInstruction) -> None:
        self._target_of_indirect(gi)
        self._push_return(gi)
        self._asm(f"jmp {self.dispatch:#x}", None)

    def _target_of_indirect(self, gi: GuestInstruction) -> None:
        """The branch target into the data page, the guest's stack and registers unchanged."""
        target = self._data(region.TARGET)
        width = "qword" if self.mode is CodeMode.BITS64 else "dword"
        if gi.insn.memory is None:
            self._asm(f"mov {width} ptr [{target}], {self._name(gi.insn.registers[0])}", gi.address)
            return
        self._ident_as_push(gi)                              # PUSH [mem]: reads the target
        self._asm(f"pop {width} ptr [{target}]", gi.address)  # stack back as it was: exact

    def _ident_as_push(self, gi: GuestInstruction) -> None:
        """FF /2 or FF /4 (CALL/JMP near indirect) re-encoded as FF /6 (PUSH) on the same operand."""
        raw = bytearray(gi.insn.raw)
        opcode = opcode_index(raw, self.mode)
        if raw[opcode] != 0xFF or (raw[opcode + 1] >> 3) & 7 not in (2, 4) or 0x66 in gi.insn.prefixes:
            raise Untranslatable(f"indirect branch form at {gi.address:#x}")
        raw[opcode + 1] = (raw[opcode + 1] & 0xC7) | (6 << 3)
        push = dataclasses.replace(gi.insn, raw=bytes(raw))
        self._ident(GuestInstruction(push, Shape.IDENT, None, gi.disp_offset))

    def _leaves(self, gi: GuestInstruction) -> None:
        self._ident(gi)

    def _trap(self, gi: GuestInstruction) -> None:
        self._ident(gi)
        # INT n stops the vCPU with RIP after it: that boundary is the next guest instruction.
        self._exit_stub(gi.next_address, branch_field=None)

    def _interpret(self, gi: GuestInstruction) -> None:
        """Far CALL in 32-bit code, as PUSH CS, PUSH of the guest's return address, and the
        far JMP of the same pointer (SDM Vol. 2 CALL: the same pushes, then the same segment
        load), so the stack holds the guest's CS:EIP, never a TC address. The JMP leaves the
        TC like any far transfer. A fault in the far JMP itself (a bad selector) would be
        reported after the pushes: such a call is refused by the translator instead when
        its operand depends on ESP."""
        raw = bytearray(gi.insn.raw)
        opcode = opcode_index(raw, self.mode)
        if self.mode is not CodeMode.BITS32 or 0x66 in gi.insn.prefixes:
            raise Untranslatable(f"far call at {gi.address:#x}: only 32-bit far calls are translated")
        if raw[opcode] == 0x9A:                          # CALL ptr16:32 -> JMP ptr16:32
            raw[opcode] = 0xEA
        elif raw[opcode] == 0xFF and (raw[opcode + 1] >> 3) & 7 == 3 and not _uses_stack_pointer(gi):
            raw[opcode + 1] = (raw[opcode + 1] & 0xC7) | (5 << 3)   # FF /3 -> FF /5
        else:
            raise Untranslatable(f"far call form at {gi.address:#x}")
        self._put(b"\x0e", gi.address)                            # PUSH CS
        self._put(b"\x68" + struct.pack("<I", gi.next_address & 0xFFFF_FFFF), None)
        self._put(bytes(raw), None)

    def fall_through(self, guest: int, source: int) -> None:
        """A block that ends without a control transfer continues at `guest`."""
        self._branch(bytes([JMP_REL32]), guest, guest, source)

    # --- stubs -------------------------------------------------------------------------------
    def _exit_stub(self, target: int, branch_field: int | None, source: int | None = None) -> int:
        at = self._put(SYSCALL, target)
        self.fragment.callouts[at] = Callout("exit", target=target, resume=at,
                                             branch_field=branch_field, source=source)
        return at

    def finish(self) -> Fragment:
        """Resolve branches: inside the fragment directly, else through exit stubs."""
        for field_address, target, source in self._pending:
            destination = self._labels.get(target)
            if destination is None:
                destination = self._exit_stub(target, field_address, source)
            _patch_rel32(self.fragment, field_address, destination)
        self.fragment.labels = dict(self._labels)
        return self.fragment

    def _name(self, unicorn_register: int) -> str:
        return _UNICORN_NAMES[unicorn_register]


# --- helpers -----------------------------------------------------------------------------------

_UC_CR0 = U.UC_X86_REG_CR0


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


def _uses_stack_pointer(gi: GuestInstruction) -> bool:
    memory = gi.insn.memory
    return memory is not None and U.UC_X86_REG_ESP in (memory.base, memory.index)


def _jcc_rel32(raw: bytes) -> bytes:
    """The rel32 form (0F 8x) of a Jcc written either way."""
    opcode = raw[opcode_index(raw, CodeMode.BITS32)]
    if opcode == 0x0F:
        return bytes(raw[:opcode_index(raw, CodeMode.BITS32) + 2])
    return bytes([0x0F, 0x80 | (opcode & 0x0F)])


def _patch_rel32(fragment: Fragment, field_address: int, destination: int) -> None:
    offset = field_address - fragment.tc_entry
    struct.pack_into("<i", fragment.code, offset, destination - (field_address + 4))
