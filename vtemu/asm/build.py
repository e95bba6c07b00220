"""Source file in, checked image out: the entry points the CLI, Makefile and tests use.

Every build goes through the same three steps (preprocess, assemble, Capstone round-trip
check), so no image reaches a guest with a known Keystone misencoding in it. Guest builds
additionally parse their own multiboot header, so a guest whose header would load it anywhere
but its assembly base fails at build time rather than at boot.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

from vtemu.asm.assembler import AssembledImage, assemble
from vtemu.asm.multiboot import parse_multiboot
from vtemu.asm.preprocess import NO_DEFINES, display_path, preprocess
from vtemu.asm.roundtrip import check_roundtrip
from vtemu.asm.source import CodeMode
from vtemu.errors import ImageError
from vtemu.machine.layout import HIGH_RAM_BASE

GUEST_BASE = HIGH_RAM_BASE          # multiboot kernels load at 1 MiB
ROM_FILL = 0xFF                     # erased flash reads as all ones


def assemble_file(src: Path, base: int, defines: Mapping[str, str | None] = NO_DEFINES,
                  include_dirs: Sequence[Path] = (),
                  initial_mode: CodeMode = CodeMode.BITS32) -> AssembledImage:
    """Preprocess, assemble at `base` and round-trip check; keeps addresses and symbols."""
    image = assemble(preprocess(src, defines, include_dirs, initial_mode), base)
    check_roundtrip(image)
    return image


def build_guest(src: Path, defines: Mapping[str, str | None] = NO_DEFINES,
                include_dirs: Sequence[Path] = ()) -> bytes:
    """A flat multiboot guest assembled at 1 MiB (the source includes multiboot.inc)."""
    image = assemble_file(src, GUEST_BASE, defines, include_dirs)
    _check_loads_at_base(image, display_path(Path(src)))
    return image.data


def _check_loads_at_base(image: AssembledImage, name: str) -> None:
    """The header must load the whole file at the base it was assembled for."""
    plan = parse_multiboot(image.data, name)
    if plan.kludge is None:
        raise ImageError(f"{name}: a flat guest needs the a.out kludge (flags bit 16): "
                         "include multiboot.inc")
    segment = plan.segments[0]
    if segment.address != image.base or segment.file_offset != 0:
        raise ImageError(f"{name}: multiboot header loads file offset {segment.file_offset:#x} at "
                         f"{segment.address:#x}, not offset 0 at {image.base:#x}: include "
                         "multiboot.inc before anything that emits bytes")
    if segment.file_size != len(image.data):
        raise ImageError(f"{name}: multiboot load_end_addr leaves {len(image.data) - segment.file_size} "
                         "byte(s) of the image unloaded: MULTIBOOT_IMAGE_END must come last")


def build_rom(src: Path, base: int, size: int, defines: Mapping[str, str | None] = NO_DEFINES,
              include_dirs: Sequence[Path] = ()) -> bytes:
    """A firmware ROM of exactly `size` bytes at `base`; `.org` offsets place the code."""
    image = assemble_file(src, base, defines, include_dirs)
    if len(image.data) > size:
        culprit = next(p for p in image.statements if p.address + p.size > base + size)
        raise culprit.statement.error(f"ROM overflows: `{culprit.text}` ends at offset "
                                      f"{culprit.address + culprit.size - base:#x}, past the "
                                      f"{size:#x}-byte ROM")
    return image.data + bytes([ROM_FILL]) * (size - len(image.data))


def write_image(data: bytes, out_path: Path) -> None:
    """Write atomically (parallel make never sees half an image), creating parent dirs."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(out_path)
