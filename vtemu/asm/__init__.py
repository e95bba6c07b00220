"""Guest toolchain around Keystone: includes, macros, multiboot packaging, round-trip checks.

Public API:
    build_guest(src, defines, include_dirs) -> bytes        flat multiboot guest at 1 MiB
    build_rom(src, base, size, defines, include_dirs) -> bytes   padded firmware ROM
    write_image(data, out_path)
    assemble_file(src, base, defines, include_dirs, initial_mode) -> AssembledImage
    preprocess / preprocess_text -> PreprocessedSource
    assemble(source, base) -> AssembledImage
    check_roundtrip(image)
    parse_multiboot(image, name) -> MultibootImage
Errors are vtemu.errors.AssemblyError / ImageError with a one-line `file:line: ...` message.
"""

from vtemu.asm.assembler import AssembledImage, PlacedStatement, assemble
from vtemu.asm.build import (
    GUEST_BASE,
    assemble_file,
    build_guest,
    build_rom,
    write_image,
)
from vtemu.asm.multiboot import AoutKludge, LoadSegment, MultibootImage, parse_multiboot
from vtemu.asm.preprocess import (
    DEFAULT_INCLUDE_DIR,
    PreprocessedSource,
    preprocess,
    preprocess_text,
)
from vtemu.asm.roundtrip import check_roundtrip
from vtemu.asm.source import CodeMode, SourceLoc, Statement, StatementKind

__all__ = [
    "DEFAULT_INCLUDE_DIR",
    "GUEST_BASE",
    "AoutKludge",
    "AssembledImage",
    "CodeMode",
    "LoadSegment",
    "MultibootImage",
    "PlacedStatement",
    "PreprocessedSource",
    "SourceLoc",
    "Statement",
    "StatementKind",
    "assemble",
    "assemble_file",
    "build_guest",
    "build_rom",
    "check_roundtrip",
    "parse_multiboot",
    "preprocess",
    "preprocess_text",
    "write_image",
]
