"""Small helpers shared by the toolchain tests: build from text, decode with Capstone."""

from collections.abc import Mapping
from pathlib import Path

from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs, CsInsn

from vtemu.asm.assembler import AssembledImage, PlacedStatement, assemble
from vtemu.asm.preprocess import preprocess_text
from vtemu.asm.roundtrip import check_roundtrip
from vtemu.asm.source import StatementKind

BASE = 0x100000
_CS_MODES = {16: CS_MODE_16, 32: CS_MODE_32, 64: CS_MODE_64}


def assembled(text: str, base: int = BASE, defines: Mapping[str, str | None] | None = None,
              path: str = "t.S") -> AssembledImage:
    """Preprocess and assemble in-memory source (no round-trip check)."""
    return assemble(preprocess_text(text, path, defines or {}), base)


def checked(text: str, base: int = BASE, path: str = "t.S") -> AssembledImage:
    """Like assembled(), then the Capstone round-trip check."""
    image = assembled(text, base, path=path)
    check_roundtrip(image)
    return image


def decode(data: bytes, bits: int = 32, address: int = BASE) -> list[CsInsn]:
    decoder = Cs(CS_ARCH_X86, _CS_MODES[bits])
    decoder.detail = True
    return list(decoder.disasm(data, address))


def instructions(image: AssembledImage) -> list[PlacedStatement]:
    return [p for p in image.statements if p.kind is StatementKind.INSTRUCTION]


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
