"""build_guest / build_rom / write_image: the whole pipeline on real files."""

import re
from pathlib import Path

import pytest

from tests.unit.asm.helpers import decode, write
from vtemu.asm import (
    GUEST_BASE,
    assemble_file,
    build_guest,
    build_rom,
    parse_multiboot,
    write_image,
)
from vtemu.errors import AssemblyError, BadInput, ImageError

TINY_GUEST = """\
.include "multiboot.inc"
.include "x86.inc"
_start:                         # EAX = 0x2BADB002, EBX = multiboot info
    mov esp, stack_top
    LGDT32 gdt_pointer
    LJMP32 0x08, reload
reload:
.ifdef GREETING
    mov al, GREETING
.else
    mov al, 'A'
.endif
    mov dx, 0x3F8
    out dx, al
    hlt
gdt_pointer:
    .word 0x17
    .long 0
MULTIBOOT_IMAGE_END 0x2000
.equ stack_top, _bss_end
"""


def test_tiny_guest_boot_plan_matches_its_labels(tmp_path: Path) -> None:
    src = write(tmp_path, "tiny.S", TINY_GUEST)
    data = build_guest(src)
    symbols = assemble_file(src, GUEST_BASE).symbols
    plan = parse_multiboot(data)
    assert plan.entry == symbols["_start"]
    assert plan.kludge is not None
    assert (plan.kludge.load_addr, plan.kludge.load_end_addr, plan.kludge.bss_end_addr) == (
        GUEST_BASE, symbols["_image_end"], symbols["_image_end"] + 0x2000)
    assert len(data) == symbols["_image_end"] - GUEST_BASE


def test_defines_reach_the_guest(tmp_path: Path) -> None:
    src = write(tmp_path, "tiny.S", TINY_GUEST)
    plain, greeted = build_guest(src), build_guest(src, {"GREETING": "0x42"})
    assert b"\xb0\x41" in plain and b"\xb0\x42" in greeted


@pytest.mark.parametrize("source, error, message", [
    ("_start: hlt\n", ImageError, r"no multiboot header"),
    (".long 0\n" + TINY_GUEST, ImageError,
     r"multiboot header loads file offset 0x4 at 0x100004, not offset 0 at 0x100000: "
     r"include multiboot\.inc before anything that emits bytes"),
    (TINY_GUEST + ".long 0\n", ImageError, r"leaves 4 byte\(s\) of the image unloaded: "
                                           r"MULTIBOOT_IMAGE_END must come last"),
    (TINY_GUEST.replace("LGDT32 gdt_pointer", "lgdt [gdt_pointer]"), AssemblyError,
     r"g\.S:5: Keystone misencoded `lgdt \[gdt_pointer\]`"),
])
def test_guest_build_errors(tmp_path: Path, source: str, error: type[Exception], message: str) -> None:
    src = write(tmp_path, "g.S", source)
    with pytest.raises(error, match=message):
        build_guest(src)


ROM = """\
.code16
.include "x86.inc"
rom_start:
    cli
    LGDT16_32 gdt_pointer - rom_start
    hlt
gdt_pointer:
    .word 0x17
    .long 0xFFFF0000 + (gdt - rom_start)
gdt:
    .quad 0
.org 0xFFF0, 0xFF
reset_vector:
    LJMP16 0xF000, rom_start - rom_start
"""


def test_rom_is_placed_with_org_and_padded_with_ff(tmp_path: Path) -> None:
    src = write(tmp_path, "rom.S", ROM)
    rom = build_rom(src, base=0xFFFF0000, size=0x10000)
    assert len(rom) == 0x10000
    reset = decode(rom[0xFFF0:0xFFF5], 16, 0xFFF0)
    assert [(i.mnemonic, i.op_str) for i in reset] == [("ljmp", "0xf000:0")]
    assert rom[0xFFF5:] == b"\xff" * 11
    assert [i.mnemonic for i in decode(rom[:10], 16, 0)][:3] == ["cli", "lgdt", "hlt"]


def test_rom_larger_than_its_size_names_the_overflowing_line(tmp_path: Path) -> None:
    src = write(tmp_path, "rom.S", ROM + ".fill 0x20, 1, 0x90\n")
    with pytest.raises(AssemblyError, match=r"rom\.S:15: ROM overflows: `\.fill 0x20, 1, 0x90` ends at "
                                            r"offset 0x10015, past the 0x10000-byte ROM$"):
        build_rom(src, base=0xFFFF0000, size=0x10000)


def test_write_image_creates_parent_directories(tmp_path: Path) -> None:
    out = tmp_path / "build" / "guests" / "tiny.bin"
    write_image(b"\x01\x02", out)
    write_image(b"\x03", out)
    assert out.read_bytes() == b"\x03"
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.bin"]


BROKEN = {
    "bad.S": 'nop\n.include "missing.inc"\n',
    "cycle.S": '.include "cycle.S"\n',
    "keystone.S": "nop\nfrobnicate\n",
    "misencoded.S": ".code16\nret\n",
    "directive.S": ".section .text\n",
    "macro.S": ".macro M a\n.endm\nM\n",
    "comment.S": "/* open\n",
    "string.S": '.ascii "open\n',
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_error_messages_are_one_line_with_file_and_line(tmp_path: Path, name: str) -> None:
    src = write(tmp_path, name, BROKEN[name])
    with pytest.raises(BadInput) as caught:
        build_guest(src)
    message = str(caught.value)
    assert "\n" not in message
    assert re.match(rf"^\S*{re.escape(name)}:\d+: \S", message), message
