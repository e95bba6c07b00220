"""Direct access to the parts of Unicorn 2.1.4 that vtemu needs and its Python binding hides.

Three kinds of access, each measured and each verified by a self-test when first used:

* Fast register and emulation calls straight through ctypes. The binding's reg_read/reg_write
  cost ~2 µs each because of type dispatch; the raw C calls cost ~0.45 µs. Exits are hot.
* Hooks registered with our own ctypes callbacks (the binding refuses RDTSC instruction hooks
  and wraps every callback in three Python frames). Every callback runs under a guard that
  records the first Python exception and stops emulation, so a bug in a handler becomes a
  defined run outcome instead of a crash inside C.
* Fields of Unicorn's private state, located by probing rather than by hard-coded layout:
  - in the CPU context blob (QEMU's CPUX86State copy): segment descriptor caches, hflags,
    error_code, exception_is_int and old_exception. Unicorn never runs QEMU's delivery code,
    so old_exception ("exception in flight") is never reset: without resetting it ourselves
    the second handled fault is reported as #DF and the third silently ends emulation.
  - in the engine (struct uc_struct): emu_counter (instructions counted by `count` mode, not
    otherwise exposed) and invalid_addr (the exact faulting address of a refused TLB fill).
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass
from functools import cache
from typing import Callable

import unicorn
import unicorn.unicorn_py3.unicorn as _binding
from unicorn import x86_const as X

from vtemu.errors import UnsupportedHost

_lib = _binding.uclib

UC_ERR_OK = unicorn.UC_ERR_OK
UC_ERR_INSN_INVALID = unicorn.UC_ERR_INSN_INVALID
UC_ERR_EXCEPTION = unicorn.UC_ERR_EXCEPTION

# --- callback signatures (unicorn.h) ---------------------------------------------------------
_VOIDP = ctypes.c_void_p
CODE_CB = ctypes.CFUNCTYPE(None, _VOIDP, ctypes.c_uint64, ctypes.c_uint32, _VOIDP)
INTR_CB = ctypes.CFUNCTYPE(None, _VOIDP, ctypes.c_uint32, _VOIDP)
INSN_IN_CB = ctypes.CFUNCTYPE(ctypes.c_uint32, _VOIDP, ctypes.c_uint32, ctypes.c_int, _VOIDP)
INSN_OUT_CB = ctypes.CFUNCTYPE(None, _VOIDP, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint32, _VOIDP)
INSN_SKIP_CB = ctypes.CFUNCTYPE(ctypes.c_int, _VOIDP, _VOIDP)          # CPUID, RDTSC, RDTSCP
INSN_INVALID_CB = ctypes.CFUNCTYPE(ctypes.c_bool, _VOIDP, _VOIDP)
INSN_SYSCALL_CB = ctypes.CFUNCTYPE(None, _VOIDP, _VOIDP)
MEM_CB = ctypes.CFUNCTYPE(ctypes.c_bool, _VOIDP, ctypes.c_int, ctypes.c_uint64, ctypes.c_int,
                          ctypes.c_int64, _VOIDP)
TLB_FILL_CB = ctypes.CFUNCTYPE(ctypes.c_bool, _VOIDP, ctypes.c_uint64, ctypes.c_int,
                               ctypes.POINTER(_binding.uc_tlb_entry), _VOIDP)


class _Hook:
    """Keeps a registered callback alive and knows how to remove it."""

    def __init__(self, engine: "Engine", handle: int, cfunc: object) -> None:
        self.engine = engine
        self.handle = handle
        self.cfunc = cfunc

    def remove(self) -> None:
        if self.handle:
            _lib.uc_hook_del(self.engine.handle, ctypes.c_size_t(self.handle))
            self.engine._hooks.discard(self)
            self.handle = 0


class Engine:
    """A Unicorn instance seen through fast raw calls; `uc` stays available for setup calls."""

    def __init__(self, uc: unicorn.Uc) -> None:
        self.uc = uc
        self.handle = uc._uch
        self._value = ctypes.c_uint64(0)
        self._value_ref = ctypes.byref(self._value)
        self._hooks: set[_Hook] = set()
        self.hook_error: BaseException | None = None
        self._internals = engine_offsets()
        self._uc_struct = self.handle.value

    # --- registers -----------------------------------------------------------------------
    def read(self, reg: int) -> int:
        # Unicorn stores only the register's width: clear the buffer so a 32-, 16- or 8-bit read
        # does not return bits left over from an earlier wider one.
        self._value.value = 0
        _lib.uc_reg_read(self.handle, reg, self._value_ref)
        return self._value.value

    def write(self, reg: int, value: int) -> None:
        self._value.value = value & 0xFFFFFFFFFFFFFFFF
        _lib.uc_reg_write(self.handle, reg, self._value_ref)

    # --- running -------------------------------------------------------------------------
    def start(self, begin: int, count: int = 0) -> int:
        """Run from `begin` (the current RIP) until something stops the CPU; returns uc_err."""
        self.hook_error = None
        return _lib.uc_emu_start(self.handle, begin, 0, 0, count)

    def stop(self) -> None:
        _lib.uc_emu_stop(self.handle)

    def counted_instructions(self) -> int:
        """Instructions `count` mode has counted in the current/last emu_start (live)."""
        return ctypes.c_uint64.from_address(self._uc_struct + self._internals.emu_counter).value

    def invalid_address(self) -> int:
        """Exact linear address of the last refused TLB fill (the fill hook only sees its page)."""
        return ctypes.c_uint64.from_address(self._uc_struct + self._internals.invalid_addr).value

    # --- hooks ---------------------------------------------------------------------------
    def _guard(self, function: Callable, default: object) -> Callable:
        def guarded(_handle: object, *args: object) -> object:
            try:
                return function(*args[:-1])
            except BaseException as error:  # noqa: BLE001 - must not unwind through C
                if self.hook_error is None:
                    self.hook_error = error
                _lib.uc_emu_stop(self.handle)
                return default
        return guarded

    def _add(self, kind: int, ctype: type, function: Callable, default: object,
             begin: int = 1, end: int = 0, *extra: int) -> _Hook:
        cfunc = ctype(self._guard(function, default))
        handle = ctypes.c_size_t(0)
        status = _lib.uc_hook_add(self.handle, ctypes.byref(handle), kind, cfunc, None,
                                  ctypes.c_uint64(begin), ctypes.c_uint64(end),
                                  *[ctypes.c_int(value) for value in extra])
        if status != UC_ERR_OK:
            raise UnsupportedHost(f"unicorn refused hook type {kind}: {unicorn.UcError(status)}")
        hook = _Hook(self, handle.value, cfunc)
        self._hooks.add(hook)
        return hook

    def hook_code(self, function: Callable[[int, int], None], begin: int, end: int) -> _Hook:
        return self._add(unicorn.UC_HOOK_CODE, CODE_CB, function, None, begin, end)

    def hook_memory(self, kinds: int, function: Callable[[int, int, int, int], bool],
                    begin: int, end: int) -> _Hook:
        """UC_HOOK_MEM_READ/WRITE over [begin, end] (virtual addresses): function(type,
        address, size, value); a debugger's watchpoints."""
        return self._add(kinds, MEM_CB, function, True, begin, end)

    def hook_interrupt(self, function: Callable[[int], None]) -> _Hook:
        return self._add(unicorn.UC_HOOK_INTR, INTR_CB, function, None)

    def hook_in(self, function: Callable[[int, int], int]) -> _Hook:
        return self._add(unicorn.UC_HOOK_INSN, INSN_IN_CB, function, 0, 1, 0, X.UC_X86_INS_IN)

    def hook_out(self, function: Callable[[int, int, int], None]) -> _Hook:
        return self._add(unicorn.UC_HOOK_INSN, INSN_OUT_CB, function, None, 1, 0, X.UC_X86_INS_OUT)

    def hook_skipping_insn(self, instruction: int, function: Callable[[], int]) -> _Hook:
        """CPUID, RDTSC or RDTSCP: the callback returns 1 to skip the native instruction."""
        return self._add(unicorn.UC_HOOK_INSN, INSN_SKIP_CB, function, 1, 1, 0, instruction)

    def hook_syscall(self, function: Callable[[], None]) -> _Hook:
        """SYSCALL: Unicorn calls this instead of the instruction's semantics, then adds the
        instruction's length (2) to RIP (helper_syscall): a callback that moves RIP to T
        must write T - 2."""
        return self._add(unicorn.UC_HOOK_INSN, INSN_SYSCALL_CB, function, None, 1, 0,
                         X.UC_X86_INS_SYSCALL)

    def hook_invalid(self, function: Callable[[], bool]) -> _Hook:
        return self._add(unicorn.UC_HOOK_INSN_INVALID, INSN_INVALID_CB, function, False)

    def hook_tlb_fill(self, function: Callable[[int, int, object], bool]) -> _Hook:
        def fill(vaddr: int, access: int, entry: object) -> bool:
            return function(vaddr, access, entry.contents)  # type: ignore[attr-defined]
        return self._add(unicorn.UC_HOOK_TLB_FILL, TLB_FILL_CB, fill, False)


# --- the CPU context blob --------------------------------------------------------------------

class SegmentCacheLayout(ctypes.Structure):
    """QEMU's SegmentCache: what the CPU keeps of a segment descriptor once loaded."""

    _fields_ = [("selector", ctypes.c_uint32), ("base", ctypes.c_uint64),
                ("limit", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class CpuStatePrefix(ctypes.Structure):
    """The leading fields of QEMU 5's CPUX86State (target/i386/cpu.h) that vtemu touches."""

    _fields_ = [("regs", ctypes.c_uint64 * 16), ("eip", ctypes.c_uint64),
                ("eflags", ctypes.c_uint64), ("cc_dst", ctypes.c_uint64),
                ("cc_src", ctypes.c_uint64), ("cc_src2", ctypes.c_uint64),
                ("cc_op", ctypes.c_uint32), ("df", ctypes.c_int32),
                ("hflags", ctypes.c_uint32), ("hflags2", ctypes.c_uint32),
                ("segs", SegmentCacheLayout * 6), ("ldt", SegmentCacheLayout),
                ("tr", SegmentCacheLayout), ("gdt", SegmentCacheLayout),
                ("idt", SegmentCacheLayout), ("cr", ctypes.c_uint64 * 9)]


@dataclass(frozen=True)
class ContextOffsets:
    """Byte offsets inside a uc_context (header + CPUX86State)."""

    header: int
    hflags: int
    segs: int
    error_code: int
    exception_is_int: int
    old_exception: int


@dataclass(frozen=True)
class EngineOffsets:
    """Byte offsets inside struct uc_struct."""

    emu_counter: int
    invalid_addr: int


def _blob(uc: unicorn.Uc) -> bytes:
    return bytes(uc.context_save())


def _changed_int32(before: bytes, after: bytes, old: int, new: int, start: int) -> int:
    hits = [offset for offset in range(start, min(len(before), len(after)) - 3, 4)
            if struct.unpack_from("<i", before, offset)[0] == old
            and struct.unpack_from("<i", after, offset)[0] == new]
    if len(hits) != 1:
        raise UnsupportedHost(f"cannot locate a CPU state field ({old} -> {new}): {hits}")
    return hits[0]


def _probe_engine(code: bytes, tlb_fill: Callable | None = None, count: int = 0
                  ) -> tuple[unicorn.Uc, dict[str, bytes], int]:
    """Run a few 64-bit instructions in a scratch engine, capturing the context at the first trap."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 0x10000)
    uc.mem_write(0x1000, code)
    uc.reg_write(X.UC_X86_REG_RSP, 0x8000)
    captured: dict[str, bytes] = {"before": _blob(uc)}

    def on_interrupt(uc_: unicorn.Uc, vector: int, _data: object) -> None:
        captured.setdefault("trap", _blob(uc_))
        uc_.emu_stop()

    uc.hook_add(unicorn.UC_HOOK_INTR, on_interrupt)
    if tlb_fill is not None:
        uc.ctl_set_tlb_mode(unicorn.UC_TLB_VIRTUAL)
        uc.hook_add(unicorn.UC_HOOK_TLB_FILL, tlb_fill)
    status = 0
    try:
        uc.emu_start(0x1000, 0x1000 + len(code), count=count)
    except unicorn.UcError as error:
        status = error.errno
    return uc, captured, status


# mov ax, 0x1234 ; mov ds, ax   -> #GP(0x1234): QEMU raises with the selector as error code
_GP_WITH_ERROR = bytes.fromhex("66b83412" "8ed8")
# int 0x80                      -> software interrupt: exception_is_int = 1
_SOFTWARE_INT = bytes.fromhex("cd80")
_PROBE_ADDRESS = 0x00007EADBEEF1234
# mov rax, PROBE ; mov rbx, [rax] ; then a 3-instruction countable tail
_FAULTING_LOAD = (b"\x48\xb8" + _PROBE_ADDRESS.to_bytes(8, "little") + bytes.fromhex("488b18"))
_COUNT_MARK = 0x5EED0000ABCD
_THREE_NOPS_AND_HLT = bytes.fromhex("909090f4")


@cache
def context_offsets() -> ContextOffsets:
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.reg_write(X.UC_X86_REG_RAX, 0x1122334455667788)
    header = _blob(uc).find((0x1122334455667788).to_bytes(8, "little"))
    if header < 0:
        raise UnsupportedHost("cannot locate RAX in Unicorn's CPU context")
    prefix = {name: getattr(CpuStatePrefix, name).offset for name, _ in CpuStatePrefix._fields_}
    _verify_prefix_layout(header, prefix)
    _, gp, _ = _probe_engine(_GP_WITH_ERROR)
    _, soft, _ = _probe_engine(_SOFTWARE_INT)
    start = header + ctypes.sizeof(CpuStatePrefix)
    return ContextOffsets(
        header=header,
        hflags=header + prefix["hflags"],
        segs=header + prefix["segs"],
        error_code=_changed_int32(gp["before"], gp["trap"], 0, 0x1234, start),
        exception_is_int=_changed_int32(soft["before"], soft["trap"], 0, 1, start),
        old_exception=_changed_int32(gp["before"], gp["trap"], -1, 13, start),
    )


def _verify_prefix_layout(header: int, prefix: dict[str, int]) -> None:
    """Check the hand-written struct prefix against registers written through the API."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.reg_write(X.UC_X86_REG_RIP, 0x0BADC0DE0BADC0DE)
    uc.reg_write(X.UC_X86_REG_LDTR, (0x28, 0x11223344, 0x5566, 0x778899))
    blob = _blob(uc)
    ldt = header + prefix["ldt"]
    checks = [
        struct.unpack_from("<Q", blob, header + prefix["eip"])[0] == 0x0BADC0DE0BADC0DE,
        struct.unpack_from("<I4xQII", blob, ldt) == (0x28, 0x11223344, 0x5566, 0x778899),
    ]
    if not all(checks):
        raise UnsupportedHost("Unicorn's CPUX86State layout differs from the one vtemu knows")


@cache
def engine_offsets() -> EngineOffsets:
    def refuse_high(_uc: object, vaddr: int, _access: int, entry: object, _data: object) -> bool:
        if vaddr >= 0x10000:
            return False
        entry.paddr, entry.perms = vaddr, unicorn.UC_PROT_ALL  # type: ignore[attr-defined]
        return True

    counted, _, _ = _probe_engine(_THREE_NOPS_AND_HLT, count=_COUNT_MARK)
    faulted, _, status = _probe_engine(_FAULTING_LOAD, tlb_fill=refuse_high)
    counter = _find_u64(counted, _COUNT_MARK) - 8
    invalid = _find_u64(faulted, _PROBE_ADDRESS)
    if struct.unpack_from("<Q", _engine_bytes(counted, counter + 8), counter)[0] != 4:
        raise UnsupportedHost("Unicorn's instruction counter does not count as vtemu expects")
    if status != UC_ERR_EXCEPTION:
        raise UnsupportedHost("a refused TLB fill did not stop Unicorn with UC_ERR_EXCEPTION")
    return EngineOffsets(emu_counter=counter, invalid_addr=invalid)


def _engine_bytes(uc: unicorn.Uc, length: int) -> bytes:
    return ctypes.string_at(uc._uch.value, length)


def _find_u64(uc: unicorn.Uc, value: int, limit: int = 8192) -> int:
    """Search the engine struct a page at a time, never reading further than needed."""
    needle = value.to_bytes(8, "little")
    for length in range(1024, limit + 1, 1024):
        offset = _engine_bytes(uc, length).find(needle)
        if offset >= 0 and offset % 8 == 0:
            return offset
    raise UnsupportedHost("cannot locate Unicorn's private engine fields; is this Unicorn 2.1.4?")
