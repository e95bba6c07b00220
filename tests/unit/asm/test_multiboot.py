"""Multiboot v1 parsing (spec 0.6.96 section 3.1): a.out kludge and ELF32 load plans, and a
one-line ImageError for every inconsistency."""

import struct

import pytest

from tests.unit.asm.helpers import BASE, assembled
from vtemu.asm.multiboot import (
    FLAG_AOUT_KLUDGE,
    FLAG_MEMORY_INFO,
    MULTIBOOT_HEADER_MAGIC,
    AoutKludge,
    LoadSegment,
    parse_multiboot,
)
from vtemu.errors import ImageError

KLUDGE = FLAG_AOUT_KLUDGE | FLAG_MEMORY_INFO


def header(flags: int, *fields: int, checksum: int | None = None) -> bytes:
    if checksum is None:
        checksum = -(MULTIBOOT_HEADER_MAGIC + flags) % (1 << 32)
    return struct.pack(f"<III{len(fields)}I", MULTIBOOT_HEADER_MAGIC, flags, checksum, *fields)


def kludge_image(offset: int = 0, size: int = 0x100, header_addr: int | None = None,
                 load_addr: int = BASE, load_end: int | None = None, bss_end: int = 0,
                 entry: int | None = None, flags: int = KLUDGE) -> bytes:
    """A flat image of `size` bytes with a kludge header at `offset` (defaults: load it all)."""
    header_addr = BASE + offset if header_addr is None else header_addr
    load_end = BASE + size if load_end is None else load_end
    entry = BASE + 0x40 if entry is None else entry
    image = bytearray(size)
    block = header(flags, header_addr, load_addr, load_end, bss_end, entry)
    image[offset:offset + len(block)] = block
    return bytes(image)


# --- a.out kludge ------------------------------------------------------------------------------

GUEST = """\
.include "multiboot.inc"
_start:
    mov esp, stack_top
    hlt
message: .ascii "hello"
MULTIBOOT_IMAGE_END 0x1000
.equ stack_top, _bss_end
"""


def test_assembled_guest_header_matches_its_labels() -> None:
    image = assembled(GUEST)
    plan = parse_multiboot(image.data)
    symbols = image.symbols
    assert plan.header_offset == 0 and plan.flags == KLUDGE and not plan.is_elf
    assert plan.wants_memory_info and not plan.wants_page_alignment
    assert plan.entry == symbols["_start"]
    assert plan.kludge == AoutKludge(header_addr=symbols["multiboot_header"], load_addr=BASE,
                                     load_end_addr=symbols["_image_end"],
                                     bss_end_addr=symbols["_bss_end"], entry_addr=symbols["_start"])
    assert plan.segments == (LoadSegment(file_offset=0, address=BASE, file_size=len(image.data),
                                         memory_size=len(image.data) + 0x1000),)
    assert symbols["_bss_end"] == symbols["_image_end"] + 0x1000 == symbols["stack_top"]


def test_load_end_zero_means_the_whole_file_and_bss_zero_means_none() -> None:
    plan = parse_multiboot(kludge_image(size=0x300, load_end=0, bss_end=0))
    assert plan.segments == (LoadSegment(0, BASE, 0x300, 0x300),)


def test_file_offset_is_header_offset_minus_header_addr_minus_load_addr() -> None:
    # Header at file offset 0x80, the loaded range starts 0x20 bytes before the header.
    image = kludge_image(offset=0x80, size=0x200, header_addr=BASE + 0x20, load_addr=BASE,
                         load_end=BASE + 0x100, entry=BASE + 0x30)
    segment = parse_multiboot(image).segments[0]
    assert (segment.file_offset, segment.address, segment.file_size) == (0x60, BASE, 0x100)


def test_header_is_found_at_any_aligned_offset_after_a_false_magic() -> None:
    decoy = struct.pack("<III", MULTIBOOT_HEADER_MAGIC, 0, 0)    # magic with a bad checksum
    image = bytearray(kludge_image(offset=0x1000, size=0x1100, load_end=0, entry=BASE + 0x1080))
    image[0x10:0x1c] = decoy
    assert parse_multiboot(bytes(image)).header_offset == 0x1000


def test_optional_flags_above_bit_16_are_ignored() -> None:
    assert parse_multiboot(kludge_image(flags=KLUDGE | 1 << 20)).flags == KLUDGE | 1 << 20


KLUDGE_ERRORS = {
    "empty": (b"", r"no multiboot header .* in the first 8192 bytes of 0"),
    "no header": (bytes(0x3000), r"no multiboot header \(magic 0x1badb002 at a 32-bit aligned offset\)"),
    "unaligned": (bytes(2) + kludge_image(), r"no multiboot header"),
    "beyond 8192": (bytes(8192) + kludge_image(), r"no multiboot header .* first 8192 bytes"),
    "checksum": (header(KLUDGE, 0, 0, 0, 0, 0, checksum=0) + bytes(64),
                 r"multiboot magic at offset 0x0 but the checksum is wrong"),
    "cut off": (bytes(8188) + struct.pack("<I", MULTIBOOT_HEADER_MAGIC) + bytes(16),
                r"multiboot header at offset 0x1ffc is cut off: the first 8192 bytes end at 0x2000"),
    "video": (kludge_image(flags=KLUDGE | 1 << 2),
              r"multiboot header at 0x0 requests a video mode \(flags bit 2\)"),
    "unknown": (kludge_image(flags=KLUDGE | 1 << 5 | 1 << 9),
                r"multiboot header at 0x0 requires features vtemu does not know \(flags bit 5, 9\); "
                r"a loader must refuse such an image$"),
    "short fields": (header(KLUDGE, BASE), r"multiboot header at 0x0 has the a\.out kludge flag but its "
                                           r"address fields end at 0x20, past 0x10 \(truncated header\)"),
    "load above header": (kludge_image(load_addr=BASE + 4),
                          r"load_addr 0x100004 is above header_addr 0x100000"),
    "before file": (kludge_image(header_addr=BASE + 0x10),
                    r"load range starts before the file: the header is at offset 0x0 but "
                    r"header_addr - load_addr = 0x10"),
    "load_end low": (kludge_image(load_end=BASE), r"load_end_addr 0x100000 is not above load_addr"),
    "truncated": (kludge_image(size=0x100, load_end=BASE + 0x200),
                  r"file is truncated: load_addr\.\.load_end_addr needs file bytes 0x0-0x200 but "
                  r"the file has 0x100"),
    "header unloaded": (kludge_image(offset=0x40, size=0x100, load_end=BASE + 0x48, entry=BASE),
                        r"the multiboot header at 0x100040 is outside the loaded range 0x100000-0x100048"),
    "bss below": (kludge_image(bss_end=BASE + 0x80), r"bss_end_addr 0x100080 is below the end of the "
                                                     r"loaded data 0x100100"),
    "entry outside": (kludge_image(entry=BASE + 0x100), r"entry_addr 0x100100 is outside the loaded "
                                                        r"range \(0x100000-0x100100\)"),
    "entry in bss": (kludge_image(bss_end=BASE + 0x1000, entry=BASE + 0x200),
                     r"entry_addr 0x100200 is outside"),
    "past 4 GiB": (kludge_image(header_addr=0xFFFFFF00, load_addr=0xFFFFFF00, load_end=0,
                                bss_end=0xFFFFFFFF, entry=0xFFFFFF40) + bytes(0x100),
                   r"load range 0xffffff00\+0x200 runs past 4 GiB$"),
}


@pytest.mark.parametrize("case", sorted(KLUDGE_ERRORS))
def test_kludge_inconsistencies(case: str) -> None:
    image, message = KLUDGE_ERRORS[case]
    with pytest.raises(ImageError, match=rf"^kernel\.bin: {message}") as caught:
        parse_multiboot(image, "kernel.bin")
    assert "\n" not in str(caught.value)


# --- ELF32 -------------------------------------------------------------------------------------

ELF_HEADER_SIZE, PHDR_SIZE = 52, 32


def elf_image(segments: list[tuple[int, int, int, int, int]], entry: int, *, elf_class: int = 1,
              e_type: int = 2, machine: int = 3, size: int = 0x2000, flags: int = FLAG_MEMORY_INFO) -> bytes:
    """ELF32 with program headers (type, offset, paddr, filesz, memsz) and a multiboot header at 0x100."""
    image = bytearray(size)
    ident = b"\x7fELF" + bytes([elf_class, 1, 1]) + bytes(9)
    image[:ELF_HEADER_SIZE] = struct.pack("<16sHHIIIIIHHHHHH", ident, e_type, machine, 1, entry,
                                          ELF_HEADER_SIZE, 0, 0, ELF_HEADER_SIZE, PHDR_SIZE,
                                          len(segments), 0, 0, 0)
    for index, (p_type, offset, paddr, filesz, memsz) in enumerate(segments):
        at = ELF_HEADER_SIZE + index * PHDR_SIZE
        image[at:at + PHDR_SIZE] = struct.pack("<8I", p_type, offset, paddr, paddr, filesz, memsz, 5, 0x1000)
    image[0x100:0x10c] = header(flags)
    return bytes(image)


TEXT = (1, 0x1000, 0x200000, 0x800, 0x800)
DATA = (1, 0x1800, 0x201000, 0x400, 0x2000)
NOTE = (4, 0x100, 0x0, 0x20, 0x20)


def test_elf32_load_plan() -> None:
    plan = parse_multiboot(elf_image([NOTE, TEXT, DATA], entry=0x200010))
    assert plan.is_elf and plan.kludge is None and plan.header_offset == 0x100
    assert plan.entry == 0x200010
    assert plan.segments == (LoadSegment(0x1000, 0x200000, 0x800, 0x800),
                             LoadSegment(0x1800, 0x201000, 0x400, 0x2000))


ELF_ERRORS = {
    "not elf": (kludge_image(flags=FLAG_MEMORY_INFO), r"multiboot flags bit 16 \(a\.out kludge\) is clear "
                                                      r"and the file is not ELF"),
    "elf64": (elf_image([TEXT], 0x200010, elf_class=2), r"64-bit ELF \(ELFCLASS64\): multiboot v1 loads "
                                                        r"ELF32 images only"),
    "big endian": (elf_image([TEXT], 0x200010).replace(b"\x7fELF\x01\x01", b"\x7fELF\x01\x02", 1),
                   r"unsupported ELF class/encoding \(1/2\)"),
    "not exec": (elf_image([TEXT], 0x200010, e_type=3), r"ELF e_type is 3, multiboot needs an executable"),
    "not i386": (elf_image([TEXT], 0x200010, machine=62), r"ELF e_machine is 62, multiboot v1 needs i386"),
    "phdrs truncated": (elf_image([TEXT] * 100, 0x200010)[:0x800],
                        r"ELF program headers \(100 x 32 bytes at 0x34\) are truncated"),
    "segment truncated": (elf_image([(1, 0x1800, 0x200000, 0x1000, 0x1000)], 0x200010),
                          r"file is truncated: ELF segment 0 needs file bytes 0x1800-0x2800 but the "
                          r"file has 0x2000"),
    "filesz > memsz": (elf_image([(1, 0x1000, 0x200000, 0x800, 0x400)], 0x200010),
                       r"ELF segment 0 has p_filesz 0x800 > p_memsz 0x400"),
    "overlap": (elf_image([TEXT, (1, 0x1800, 0x200400, 0x400, 0x400)], 0x200010),
                r"ELF segments 0 and 1 overlap at 0x200400"),
    "no load": (elf_image([NOTE], 0x200010), r"ELF has no PT_LOAD segment to load"),
    "entry outside": (elf_image([TEXT, DATA], 0x300000), r"ELF entry 0x300000 is outside the loaded range "
                                                         r"\(0x200000-0x200800, 0x201000-0x201400\)"),
}


@pytest.mark.parametrize("case", sorted(ELF_ERRORS))
def test_elf_inconsistencies(case: str) -> None:
    image, message = ELF_ERRORS[case]
    with pytest.raises(ImageError, match=rf"^kernel\.elf: {message}") as caught:
        parse_multiboot(image, "kernel.elf")
    assert "\n" not in str(caught.value)
