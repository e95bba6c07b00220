"""The firmware's other multiboot path: an ELF32 kernel (no a.out kludge) loaded by program headers."""

from __future__ import annotations

import struct
import pytest

from vtemu.asm import assemble_file, parse_multiboot
from tests.guests.harness import qemu_available, run_guest, run_qemu

LOAD = 0x100000
SOURCE = """
.include "serial.inc"
.code32
header:
    .long 0x1BADB002
    .long 0x00000002
    .long -(0x1BADB002 + 0x00000002)
_start:
    mov esp, 0x90000
    SERIAL_INIT
    PUTS message
    EXIT 0
SERIAL_ROUTINES
message:
    .ascii "ELF32 kernel loaded from its program header\\n"
    .byte 0
"""


def _elf32(code: bytes, entry: int, memsz: int) -> bytes:
    """ELF32 ET_EXEC, EM_386, one PT_LOAD at p_paddr LOAD from file offset 0x1000."""
    header = struct.pack("<4sBBBBB7sHHIIIIIHHHHHH", b"\x7fELF", 1, 1, 1, 0, 0, bytes(7),
                         2, 3, 1, entry, 52, 0, 0, 52, 32, 1, 0, 0, 0)
    program = struct.pack("<IIIIIIII", 1, 0x1000, LOAD, LOAD, len(code), memsz, 5, 0x1000)
    image = bytearray(header + program)
    image += bytes(0x1000 - len(image))
    return bytes(image + code)


@pytest.fixture(scope="module")
def elf_image(tmp_path_factory) -> bytes:
    source = tmp_path_factory.mktemp("elf") / "elf.S"
    source.write_text(SOURCE)
    assembled = assemble_file(source, LOAD)
    entry = assembled.symbols["_start"]
    memsz = len(assembled.data) + 0x200
    image = _elf32(assembled.data, entry, memsz)
    parsed = parse_multiboot(image)
    assert parsed.entry == entry
    return image


def test_vtemu_firmware_loads_an_elf32_kernel(elf_image) -> None:
    run = run_guest("elf", image=elf_image)
    assert run.serial == b"ELF32 kernel loaded from its program header\n"
    assert run.exit_code == 0


@pytest.mark.differential
def test_qemu_agrees(elf_image) -> None:
    if not qemu_available():
        pytest.skip("qemu-system-x86_64 is not on PATH")
    qemu = run_qemu(elf_image)
    assert qemu.serial == b"ELF32 kernel loaded from its program header\n"
    assert qemu.status == 1

