"""Turning what the user names on the command line into bytes: kernels and the firmware ROM.

A kernel may be a multiboot image file or a guest source (.S), assembled on the fly; either
way it is checked as a multiboot v1 image before anything boots, so a bad file is a one-line
error rather than a firmware failure.
"""

from __future__ import annotations

from pathlib import Path

import vtemu
from vtemu.asm import build_guest, build_rom, parse_multiboot
from vtemu.errors import BadInput
from vtemu.machine import layout

PROJECT = Path(vtemu.__file__).resolve().parent.parent
FIRMWARE_SOURCE = PROJECT / "firmware" / "vtemu-fw.S"
FIRMWARE_IMAGE = PROJECT / "build" / "firmware" / "vtemu-fw.bin"
SOURCE_SUFFIXES = {".s", ".S", ".asm"}


def kernel_image(path: Path, defines: dict[str, str | None] | None = None) -> bytes:
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    if path.suffix in SOURCE_SUFFIXES:
        return build_guest(path, defines or {})
    data = path.read_bytes()
    parse_multiboot(data, name=str(path))
    return data


def firmware_image(path: Path | None = None) -> bytes:
    """The given ROM file, else the built one if it is current, else assembled now."""
    if path is not None:
        if not path.is_file():
            raise BadInput(f"firmware image {path} does not exist")
        data = path.read_bytes()
        if len(data) != layout.ROM_SIZE:
            raise BadInput(f"firmware image {path} is {len(data)} bytes, not {layout.ROM_SIZE}")
        return data
    if FIRMWARE_IMAGE.is_file() and (not FIRMWARE_SOURCE.is_file() or
                                     FIRMWARE_IMAGE.stat().st_mtime >= FIRMWARE_SOURCE.stat().st_mtime):
        return FIRMWARE_IMAGE.read_bytes()
    if not FIRMWARE_SOURCE.is_file():
        raise BadInput("no firmware found: run `make firmware` or pass --firmware IMAGE")
    return build_firmware(FIRMWARE_SOURCE)


def build_firmware(source: Path) -> bytes:
    return build_rom(source, base=layout.ROM_ALIAS_GPA, size=layout.ROM_SIZE)
