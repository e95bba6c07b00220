"""Multiboot v1 images: find the header and compute the load plan (Multiboot Spec 0.6.96, 3.1).

vtemu's firmware does the real loading in guest assembly; this parser exists so the CLI and
the guest build can reject a bad image with one clear line *before* booting, instead of the
guest dying somewhere in the firmware. It accepts exactly what the reference machine's loader
supports: the a.out kludge (flags bit 16, how flat vtemu guests are built) and ELF32 i386
executables; of the required-feature flags (bits 0-15) only page alignment (bit 0) and memory
information (bit 1). A requested video mode (bit 2) is refused, as the spec requires a loader
to refuse requirements it cannot meet (3.1.2).
"""

import struct
from dataclasses import dataclass
from itertools import pairwise

from vtemu.errors import ImageError

MULTIBOOT_HEADER_MAGIC = 0x1BADB002
MULTIBOOT_BOOTLOADER_MAGIC = 0x2BADB002       # EAX at entry (3.2)
HEADER_SEARCH_LIMIT = 8192                    # 3.1.1: header within the first 8192 bytes
FLAG_PAGE_ALIGN = 1 << 0
FLAG_MEMORY_INFO = 1 << 1
FLAG_VIDEO_MODE = 1 << 2
FLAG_AOUT_KLUDGE = 1 << 16
REQUIRED_FLAGS = 0x0000FFFF                   # 3.1.2: bits a loader must understand
SUPPORTED_REQUIRED_FLAGS = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO

_BASE_HEADER = struct.Struct("<III")          # magic, flags, checksum
_ADDRESS_FIELDS = struct.Struct("<IIIII")     # header_addr .. entry_addr (3.1.3, offsets 12-28)
_ELF_HEADER = struct.Struct("<16sHHIIIIIHHHHHH")
_PROGRAM_HEADER = struct.Struct("<IIIIIIII")
_ELFCLASS32, _ELFCLASS64, _ELFDATA2LSB, _ET_EXEC, _EM_386, _PT_LOAD = 1, 2, 1, 2, 3, 1
_FOUR_GIB = 1 << 32


@dataclass(frozen=True)
class LoadSegment:
    """Copy file[file_offset : +file_size] to physical `address`, zero up to `memory_size`."""

    file_offset: int
    address: int
    file_size: int
    memory_size: int

    @property
    def end(self) -> int:
        return self.address + self.memory_size


@dataclass(frozen=True)
class AoutKludge:
    """The address fields of a header with flags bit 16 (3.1.3), as written in the image."""

    header_addr: int
    load_addr: int
    load_end_addr: int
    bss_end_addr: int
    entry_addr: int


@dataclass(frozen=True)
class MultibootImage:
    """Where the header is, what the flags ask for, and what to load where."""

    header_offset: int
    flags: int
    entry: int
    segments: tuple[LoadSegment, ...]
    kludge: AoutKludge | None       # None: loaded from ELF program headers

    @property
    def is_elf(self) -> bool:
        return self.kludge is None

    @property
    def wants_memory_info(self) -> bool:
        return bool(self.flags & FLAG_MEMORY_INFO)

    @property
    def wants_page_alignment(self) -> bool:
        return bool(self.flags & FLAG_PAGE_ALIGN)


def parse_multiboot(image: bytes, name: str = "image") -> MultibootImage:
    """Validate a multiboot v1 image; every problem is an ImageError `name: what is wrong`."""
    header_offset, flags = _find_header(image, name)
    _check_required_flags(flags, header_offset, name)
    if flags & FLAG_AOUT_KLUDGE:
        kludge = _read_kludge(image, header_offset, name)
        segment = _kludge_segment(image, header_offset, kludge, name)
        _require_entry(kludge.entry_addr, [segment], name, "entry_addr")
        return MultibootImage(header_offset, flags, kludge.entry_addr, (segment,), kludge)
    entry, segments = _elf_plan(image, name)
    return MultibootImage(header_offset, flags, entry, segments, None)


def _find_header(image: bytes, name: str) -> tuple[int, int]:
    """(offset, flags) of the first 32-bit aligned magic whose checksum is right (3.1.1)."""
    bad_checksum: int | None = None
    limit = min(len(image), HEADER_SEARCH_LIMIT)
    for offset in range(0, limit - 3, 4):
        if struct.unpack_from("<I", image, offset)[0] != MULTIBOOT_HEADER_MAGIC:
            continue
        if offset + _BASE_HEADER.size > limit:
            where = "the file ends" if limit == len(image) else f"the first {HEADER_SEARCH_LIMIT} bytes end"
            raise ImageError(f"{name}: multiboot header at offset {offset:#x} is cut off: {where} "
                             f"at {limit:#x}")
        magic, flags, checksum = _BASE_HEADER.unpack_from(image, offset)
        if (magic + flags + checksum) % _FOUR_GIB == 0:
            return offset, flags
        bad_checksum = offset if bad_checksum is None else bad_checksum
    if bad_checksum is not None:
        raise ImageError(f"{name}: multiboot magic at offset {bad_checksum:#x} but the checksum is "
                         "wrong (magic + flags + checksum must be 0 mod 2^32)")
    raise ImageError(f"{name}: no multiboot header (magic {MULTIBOOT_HEADER_MAGIC:#x} at a 32-bit "
                     f"aligned offset) in the first {HEADER_SEARCH_LIMIT} bytes of {len(image)}")


def _check_required_flags(flags: int, offset: int, name: str) -> None:
    required = flags & REQUIRED_FLAGS
    if required & FLAG_VIDEO_MODE:
        raise ImageError(f"{name}: multiboot header at {offset:#x} requests a video mode "
                         "(flags bit 2), which vtemu does not support")
    unknown = required & ~SUPPORTED_REQUIRED_FLAGS
    if unknown:
        bits = ", ".join(str(b) for b in range(16) if unknown >> b & 1)
        raise ImageError(f"{name}: multiboot header at {offset:#x} requires features vtemu does "
                         f"not know (flags bit {bits}); a loader must refuse such an image")


def _read_kludge(image: bytes, offset: int, name: str) -> AoutKludge:
    end = offset + _BASE_HEADER.size + _ADDRESS_FIELDS.size
    if end > len(image) or end > HEADER_SEARCH_LIMIT:
        limit = min(len(image), HEADER_SEARCH_LIMIT)
        raise ImageError(f"{name}: multiboot header at {offset:#x} has the a.out kludge flag but "
                         f"its address fields end at {end:#x}, past {limit:#x} (truncated header)")
    return AoutKludge(*_ADDRESS_FIELDS.unpack_from(image, offset + _BASE_HEADER.size))


def _kludge_segment(image: bytes, offset: int, k: AoutKludge, name: str) -> LoadSegment:
    """The one load range the address fields describe (3.1.3)."""
    if k.load_addr > k.header_addr:
        raise ImageError(f"{name}: load_addr {k.load_addr:#x} is above header_addr "
                         f"{k.header_addr:#x}: the load range would start after the header")
    file_offset = offset - (k.header_addr - k.load_addr)
    if file_offset < 0:
        raise ImageError(f"{name}: load range starts before the file: the header is at offset "
                         f"{offset:#x} but header_addr - load_addr = {k.header_addr - k.load_addr:#x}")
    file_size = _kludge_file_size(image, file_offset, k, name)
    load_end = _checked_segment(LoadSegment(file_offset, k.load_addr, file_size, file_size), name).end
    if k.header_addr + _BASE_HEADER.size + _ADDRESS_FIELDS.size > load_end:
        raise ImageError(f"{name}: the multiboot header at {k.header_addr:#x} is outside the loaded "
                         f"range {k.load_addr:#x}-{load_end:#x}")
    if k.bss_end_addr and k.bss_end_addr < load_end:
        raise ImageError(f"{name}: bss_end_addr {k.bss_end_addr:#x} is below the end of the "
                         f"loaded data {load_end:#x}")
    memory_size = (k.bss_end_addr or load_end) - k.load_addr
    return _checked_segment(LoadSegment(file_offset, k.load_addr, file_size, memory_size), name)


def _kludge_file_size(image: bytes, file_offset: int, k: AoutKludge, name: str) -> int:
    if k.load_end_addr == 0:
        return len(image) - file_offset
    if k.load_end_addr <= k.load_addr:
        raise ImageError(f"{name}: load_end_addr {k.load_end_addr:#x} is not above load_addr "
                         f"{k.load_addr:#x}")
    size = k.load_end_addr - k.load_addr
    if file_offset + size > len(image):
        raise ImageError(f"{name}: file is truncated: load_addr..load_end_addr needs file bytes "
                         f"{file_offset:#x}-{file_offset + size:#x} but the file has {len(image):#x}")
    return size


def _checked_segment(segment: LoadSegment, name: str) -> LoadSegment:
    if segment.end > _FOUR_GIB:
        raise ImageError(f"{name}: load range {segment.address:#x}+{segment.memory_size:#x} "
                         "runs past 4 GiB")
    return segment


def _require_entry(entry: int, segments: list[LoadSegment], name: str, field: str) -> None:
    """The entry point must be in loaded file data (not bss, not outside)."""
    if not any(s.address <= entry < s.address + s.file_size for s in segments):
        ranges = ", ".join(f"{s.address:#x}-{s.address + s.file_size:#x}" for s in segments)
        raise ImageError(f"{name}: {field} {entry:#x} is outside the loaded range ({ranges})")


def _elf_plan(image: bytes, name: str) -> tuple[int, tuple[LoadSegment, ...]]:
    """Entry and PT_LOAD segments of an ELF32 i386 executable (flags bit 16 clear)."""
    _check_elf_identity(image, name)
    (_, e_type, e_machine, _, e_entry, e_phoff, _, _, _,
     e_phentsize, e_phnum, _, _, _) = _ELF_HEADER.unpack_from(image)
    if e_type != _ET_EXEC:
        raise ImageError(f"{name}: ELF e_type is {e_type}, multiboot needs an executable (ET_EXEC)")
    if e_machine != _EM_386:
        raise ImageError(f"{name}: ELF e_machine is {e_machine}, multiboot v1 needs i386 (EM_386)")
    if e_phentsize < _PROGRAM_HEADER.size or e_phoff + e_phnum * e_phentsize > len(image):
        raise ImageError(f"{name}: ELF program headers ({e_phnum} x {e_phentsize} bytes at "
                         f"{e_phoff:#x}) are truncated or malformed")
    segments = [_elf_segment(image, e_phoff + i * e_phentsize, i, name) for i in range(e_phnum)]
    loads = [(i, s) for i, s in enumerate(segments) if s is not None and s.memory_size]
    if not loads:
        raise ImageError(f"{name}: ELF has no PT_LOAD segment to load")
    _require_disjoint(loads, name)
    _require_entry(e_entry, [s for _, s in loads], name, "ELF entry")
    return e_entry, tuple(s for _, s in loads)


def _check_elf_identity(image: bytes, name: str) -> None:
    if image[:4] != b"\x7fELF":
        raise ImageError(f"{name}: multiboot flags bit 16 (a.out kludge) is clear and the file is "
                         "not ELF: a flat image needs the a.out kludge address fields")
    if len(image) < _ELF_HEADER.size:
        raise ImageError(f"{name}: ELF header truncated ({len(image)} bytes)")
    if image[4] == _ELFCLASS64:
        raise ImageError(f"{name}: 64-bit ELF (ELFCLASS64): multiboot v1 loads ELF32 images only")
    if image[4] != _ELFCLASS32 or image[5] != _ELFDATA2LSB:
        raise ImageError(f"{name}: unsupported ELF class/encoding ({image[4]}/{image[5]}): "
                         "multiboot v1 needs little-endian ELF32")


def _elf_segment(image: bytes, offset: int, index: int, name: str) -> LoadSegment | None:
    p_type, p_offset, _, p_paddr, p_filesz, p_memsz, _, _ = _PROGRAM_HEADER.unpack_from(image, offset)
    if p_type != _PT_LOAD:
        return None
    if p_filesz > p_memsz:
        raise ImageError(f"{name}: ELF segment {index} has p_filesz {p_filesz:#x} > p_memsz {p_memsz:#x}")
    if p_offset + p_filesz > len(image):
        raise ImageError(f"{name}: file is truncated: ELF segment {index} needs file bytes "
                         f"{p_offset:#x}-{p_offset + p_filesz:#x} but the file has {len(image):#x}")
    return _checked_segment(LoadSegment(p_offset, p_paddr, p_filesz, p_memsz), name)


def _require_disjoint(loads: list[tuple[int, LoadSegment]], name: str) -> None:
    ordered = sorted(loads, key=lambda item: item[1].address)
    for (i, first), (j, second) in pairwise(ordered):
        if first.end > second.address:
            raise ImageError(f"{name}: ELF segments {i} and {j} overlap at {second.address:#x}")
