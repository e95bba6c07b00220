"""x86.inc: each macro decodes (Capstone) as the instruction it stands for, and on a CPU
(Unicorn) behaves the way Keystone's own encoding does not."""

import re

import pytest
from unicorn import UC_ARCH_X86, UC_MODE_16, UC_MODE_32, Uc
from unicorn.x86_const import UC_X86_REG_ESP, UC_X86_REG_GDTR, UC_X86_REG_SP

from tests.unit.asm.helpers import checked, decode, instructions
from vtemu.asm.preprocess import DEFAULT_INCLUDE_DIR

X86_INC = DEFAULT_INCLUDE_DIR / "x86.inc"

# (mode, invocation) -> (mnemonic, operands as Capstone prints them, exact bytes)
MACROS = {
    (32, "LJMP32 0x08, 0x12345678"): ("ljmp", "8:0x12345678", "ea 78 56 34 12 08 00"),
    (16, "LJMP16_32 0x08, 0x100000"): ("ljmp", "8:0x100000", "66 ea 00 00 10 00 08 00"),
    (16, "LJMP16 0xF000, 0xFFF0"): ("ljmp", "0xf000:0xfff0", "ea f0 ff 00 f0"),
    (32, "LGDT32 0x12345678"): ("lgdt", "[0x12345678]", "0f 01 15 78 56 34 12"),
    (32, "LIDT32 0x12345678"): ("lidt", "[0x12345678]", "0f 01 1d 78 56 34 12"),
    (16, "LGDT16_32 0x500"): ("lgdt", "[0x500]", "66 0f 01 16 00 05"),
    (16, "LIDT16_32 0x500"): ("lidt", "[0x500]", "66 0f 01 1e 00 05"),
    (16, "RET16"): ("ret", "", "c3"),
    (16, "RETF16"): ("retf", "", "cb"),
    (16, "PUSHW16 0x1234"): ("push", "0x1234", "68 34 12"),
    (16, "PUSHD16 0x12345678"): ("push", "0x12345678", "66 68 78 56 34 12"),
    (32, "PUSHW32 0x1234"): ("push", "0x1234", "66 68 34 12"),
    (32, "PUSHD32 0x12345678"): ("push", "0x12345678", "68 78 56 34 12"),
    (32, "PUSH_ES"): ("push", "es", "06"),
    (32, "PUSH_CS"): ("push", "cs", "0e"),
    (32, "PUSH_SS"): ("push", "ss", "16"),
    (32, "PUSH_DS"): ("push", "ds", "1e"),
    (32, "POP_ES"): ("pop", "es", "07"),
    (32, "POP_SS"): ("pop", "ss", "17"),
    (32, "POP_DS"): ("pop", "ds", "1f"),
}


def macro_bytes(bits: int, invocation: str) -> tuple[bytes, int]:
    image = checked(f'.include "x86.inc"\n.code{bits}\nstart: {invocation}\n')
    return image.data, image.symbols["start"]


@pytest.mark.parametrize("bits, invocation", sorted(MACROS))
def test_macro_decodes_as_its_instruction(bits: int, invocation: str) -> None:
    mnemonic, operands, hex_bytes = MACROS[(bits, invocation)]
    data, address = macro_bytes(bits, invocation)
    decoded = decode(data, bits, address)
    assert len(decoded) == 1 and decoded[0].size == len(data)
    assert (decoded[0].mnemonic, decoded[0].op_str) == (mnemonic, operands)
    assert data.hex(" ") == hex_bytes


def test_every_macro_in_x86_inc_is_tested() -> None:
    defined = set(re.findall(r"^\.macro\s+(\w+)", X86_INC.read_text(), re.MULTILINE))
    assert defined == {invocation.split()[0] for _, invocation in MACROS} | {"CALL16"}


def test_macros_take_labels() -> None:
    source = '.include "x86.inc"\nLJMP32 0x08, target\nPUSHD32 target\nLGDT32 target\ntarget: nop\n'
    image = checked(source)
    target = image.symbols["target"]
    ops = [i.op_str for i in decode(image.data, 32)]
    assert ops[:3] == [f"8:{target:#x}", f"{target:#x}", f"[{target:#x}]"]


@pytest.mark.parametrize("layout", ["CALL16 target\nnop\ntarget: RET16", "target: RET16\nnop\nCALL16 target"])
def test_call16_reaches_its_target_forwards_and_backwards(layout: str) -> None:
    image = checked(f'.include "x86.inc"\n.code16\n{layout}\n')
    calls = [i for i in decode(image.data, 16) if i.mnemonic == "call"]
    assert len(calls) == 1 and calls[0].size == 3
    assert calls[0].op_str == f"{image.symbols['target']:#x}"


def test_macro_statements_are_data_for_the_roundtrip_check() -> None:
    assert instructions(checked('.include "x86.inc"\nLGDT32 0x1000\n')) == []


# --- the same effect on a CPU: Keystone's encoding is wrong, the macro is right --------------

def run(bits: int, source: str, memory: dict[int, bytes] | None = None) -> Uc:
    """Execute a snippet assembled at 0x1000 on Unicorn (real mode for 16-bit code)."""
    origin = 0x1000
    image = checked(f'.include "x86.inc"\n.code{bits}\n{source}\n', base=origin)
    cpu = Uc(UC_ARCH_X86, UC_MODE_16 if bits == 16 else UC_MODE_32)
    cpu.mem_map(0, 0x10000)
    cpu.mem_write(origin, image.data)
    for address, data in (memory or {}).items():
        cpu.mem_write(address, data)
    cpu.reg_write(UC_X86_REG_ESP if bits == 32 else UC_X86_REG_SP, 0x8000)
    cpu.emu_start(origin, origin + len(image.data))
    return cpu


PSEUDO_DESCRIPTOR = {0x2000: bytes.fromhex("1700") + (0x12345678).to_bytes(4, "little")}


def test_lgdt32_loads_all_32_bits_of_the_base() -> None:
    assert run(32, "LGDT32 0x2000", PSEUDO_DESCRIPTOR).reg_read(UC_X86_REG_GDTR)[1:3] == (0x12345678, 0x17)


def test_keystones_lgdt_would_have_loaded_24_bits() -> None:
    fixed = ".byte 0x66, 0x0f, 0x01, 0x15\n.long 0x2000"   # exactly what Keystone emits for lgdt
    assert run(32, fixed, PSEUDO_DESCRIPTOR).reg_read(UC_X86_REG_GDTR)[1] == 0x345678


@pytest.mark.parametrize("bits, source, stack_bytes", [
    (32, "PUSH_DS", 4),
    (32, ".byte 0x66, 0x1e", 2),                 # Keystone's `push ds`
    (16, "CALL16 next\nnext: nop", 2),
    (16, ".byte 0x66, 0xe8\n.long 0", 4),        # Keystone's 16-bit `call`
    (16, "PUSHW16 0x1234", 2),
    (16, ".byte 0x66, 0x6a, 0x05", 4),           # Keystone's 16-bit `push 5`
])
def test_stack_slot_sizes(bits: int, source: str, stack_bytes: int) -> None:
    cpu = run(bits, source)
    sp = cpu.reg_read(UC_X86_REG_ESP if bits == 32 else UC_X86_REG_SP)
    assert 0x8000 - sp == stack_bytes
