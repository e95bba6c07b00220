"""The i386:x86-64 register file as gdb numbers it, in every CPU mode.

Order and sizes follow gdb's amd64 target description (features org.gnu.gdb.i386.core and
org.gnu.gdb.i386.sse): rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8-r15, rip (8 bytes each),
eflags, cs, ss, ds, es, fs, gs (4), st0-st7 (10), fctrl, fstat, ftag, fiseg, fioff, foseg,
fooff, fop (4), xmm0-xmm15 (16), mxcsr (4); little-endian hex in `g`/`p` replies.

$pc (register 16, "rip") is presented as the *linear* address CS.base + RIP in every mode,
so that breakpoints, `x/i $pc` and memory reads agree in real mode too (where CS.base is
not zero); in flat protected and long mode it is RIP itself. Writing $pc sets RIP to the
value minus CS.base. Unicorn does not expose the x87 last-instruction pointers (fiseg..fop):
they read as 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import unicorn.x86_const as U

from vtemu.machine.cpustate import Seg

if TYPE_CHECKING:
    from vtemu.machine.vcpu import VCpu


@dataclass(frozen=True)
class Register:
    name: str
    size: int           # bytes
    type: str           # target.xml type
    group: str = ""


_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
         "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
_SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")
_X87_CONTROL = ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")
_X87_UNICORN = {"fctrl": U.UC_X86_REG_FPCW, "fstat": U.UC_X86_REG_FPSW, "ftag": U.UC_X86_REG_FPTAG}

REGISTERS: tuple[Register, ...] = (
    *(Register(name, 8, "data_ptr" if name in ("rbp", "rsp") else "int64") for name in _GPRS),
    Register("rip", 8, "code_ptr"),
    Register("eflags", 4, "i386_eflags"),
    *(Register(name, 4, "int32") for name in _SEGMENTS),
    *(Register(f"st{i}", 10, "i387_ext", "float") for i in range(8)),
    *(Register(name, 4, "int", "float") for name in _X87_CONTROL),
    *(Register(f"xmm{i}", 16, "vec128", "vector") for i in range(16)),
    Register("mxcsr", 4, "i386_mxcsr", "vector"),
)
PC = 16
EFLAGS = 17
FIRST_SSE = next(i for i, r in enumerate(REGISTERS) if r.name == "xmm0")
_WRITABLE = {i: getattr(U, f"UC_X86_REG_{r.name.upper()}") for i, r in enumerate(REGISTERS)
             if r.name in _GPRS or r.name == "eflags"}
_SEG_ENUM = {"cs": Seg.CS, "ss": Seg.SS, "ds": Seg.DS, "es": Seg.ES, "fs": Seg.FS, "gs": Seg.GS}


def register_value(vcpu: "VCpu", number: int) -> int:
    register = REGISTERS[number]
    name = register.name
    if name == "rip":
        return vcpu.linear_rip()
    if name == "eflags":
        return vcpu.read(U.UC_X86_REG_RFLAGS) & 0xFFFFFFFF
    if name in _SEG_ENUM:
        return vcpu.segment(_SEG_ENUM[name]).selector
    if name.startswith("st"):
        mantissa, exponent = vcpu.engine.uc.reg_read(getattr(U, f"UC_X86_REG_FP{name[2:]}"))
        return (exponent << 64) | mantissa
    if name in _X87_CONTROL:
        unicorn_id = _X87_UNICORN.get(name)
        return 0 if unicorn_id is None else vcpu.engine.uc.reg_read(unicorn_id)
    if name.startswith("xmm") or name == "mxcsr":
        return vcpu.engine.uc.reg_read(getattr(U, f"UC_X86_REG_{name.upper()}"))
    return vcpu.read(getattr(U, f"UC_X86_REG_{name.upper()}"))


def register_hex(vcpu: "VCpu", number: int) -> str:
    size = REGISTERS[number].size
    value = register_value(vcpu, number) & ((1 << (8 * size)) - 1)
    return value.to_bytes(size, "little").hex()


def all_registers_hex(vcpu: "VCpu") -> str:
    return "".join(register_hex(vcpu, number) for number in range(len(REGISTERS)))


def writable_register(number: int) -> int | None:
    """The Unicorn id of a register gdb may write (GPRs, eflags; rip is handled apart)."""
    return _WRITABLE.get(number)


def target_xml() -> str:
    """The target description gdb asks for with qXfer:features:read:target.xml."""
    core = [r for r in REGISTERS[:FIRST_SSE]]
    sse = REGISTERS[FIRST_SSE:]
    lines = ['<?xml version="1.0"?>', '<!DOCTYPE target SYSTEM "gdb-target.dtd">', "<target>",
             "<architecture>i386:x86-64</architecture>", '<feature name="org.gnu.gdb.i386.core">',
             *_flag_types()]
    lines += [_reg_xml(r, i) for i, r in enumerate(core)]
    lines += ["</feature>", '<feature name="org.gnu.gdb.i386.sse">', *_vector_types()]
    lines += [_reg_xml(r, FIRST_SSE + i) for i, r in enumerate(sse)]
    lines += ["</feature>", "</target>"]
    return "\n".join(lines)


def _reg_xml(register: Register, number: int) -> str:
    group = f' group="{register.group}"' if register.group else ""
    return (f'<reg name="{register.name}" bitsize="{8 * register.size}" type="{register.type}" '
            f'regnum="{number}"{group}/>')


def _flag_types() -> list[str]:
    """RFLAGS bits (SDM Vol. 1 3.4.3) for gdb's `info registers eflags`."""
    bits = ((0, "CF"), (1, ""), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"), (8, "TF"), (9, "IF"),
            (10, "DF"), (11, "OF"), (14, "NT"), (16, "RF"), (17, "VM"), (18, "AC"), (19, "VIF"),
            (20, "VIP"), (21, "ID"))
    fields = [f'<field name="{name}" start="{bit}" end="{bit}"/>' for bit, name in bits]
    return ['<flags id="i386_eflags" size="4">', *fields, "</flags>"]


def _vector_types() -> list[str]:
    """MXCSR bits (SDM Vol. 1 10.2.3) and the 128-bit vector union gdb's amd64 uses."""
    mxcsr = ("IE", "DE", "ZE", "OE", "UE", "PE", "DAZ", "IM", "DM", "ZM", "OM", "UM", "PM", "FZ")
    fields = [f'<field name="{name}" start="{bit}" end="{bit}"/>' for bit, name in enumerate(mxcsr)]
    return ['<vector id="v4f" type="ieee_single" count="4"/>',
            '<vector id="v2d" type="ieee_double" count="2"/>',
            '<vector id="v16i8" type="int8" count="16"/>', '<vector id="v8i16" type="int16" count="8"/>',
            '<vector id="v4i32" type="int32" count="4"/>', '<vector id="v2i64" type="int64" count="2"/>',
            '<union id="vec128">', '<field name="v4_float" type="v4f"/>',
            '<field name="v2_double" type="v2d"/>', '<field name="v16_int8" type="v16i8"/>',
            '<field name="v8_int16" type="v8i16"/>', '<field name="v4_int32" type="v4i32"/>',
            '<field name="v2_int64" type="v2i64"/>', '<field name="uint128" type="uint128"/>',
            "</union>", '<flags id="i386_mxcsr" size="4">', *fields, "</flags>"]
