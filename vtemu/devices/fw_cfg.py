"""QEMU firmware configuration device, legacy I/O interface (QEMU docs/specs/fw_cfg.rst).

The selector (offset 0, 16-bit, little-endian) picks an item and rewinds its data offset;
the data register (offset 1) streams the item's bytes. Items are fixed when the machine is
built; the guest can only read them. Without DMA (FW_CFG_ID bit 1 clear) firmware uses
exactly this byte-streaming path, which QEMU and vtemu then serve identically.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

# Selector keys (QEMU include/standard-headers/linux/qemu_fw_cfg.h).
FW_CFG_SIGNATURE = 0x0000
FW_CFG_ID = 0x0001
FW_CFG_UUID = 0x0002
FW_CFG_RAM_SIZE = 0x0003
FW_CFG_NOGRAPHIC = 0x0004
FW_CFG_NB_CPUS = 0x0005
FW_CFG_MACHINE_ID = 0x0006
FW_CFG_KERNEL_ADDR = 0x0007
FW_CFG_KERNEL_SIZE = 0x0008
FW_CFG_KERNEL_CMDLINE = 0x0009      # Linux boot: the command line's load address
FW_CFG_INITRD_ADDR = 0x000A
FW_CFG_INITRD_SIZE = 0x000B
FW_CFG_BOOT_DEVICE = 0x000C
FW_CFG_NUMA = 0x000D
FW_CFG_BOOT_MENU = 0x000E
FW_CFG_MAX_CPUS = 0x000F
FW_CFG_KERNEL_ENTRY = 0x0010
FW_CFG_KERNEL_DATA = 0x0011
FW_CFG_INITRD_DATA = 0x0012
FW_CFG_CMDLINE_ADDR = 0x0013
FW_CFG_CMDLINE_SIZE = 0x0014
FW_CFG_CMDLINE_DATA = 0x0015
FW_CFG_SETUP_ADDR = 0x0016
FW_CFG_SETUP_SIZE = 0x0017
FW_CFG_SETUP_DATA = 0x0018
FW_CFG_FILE_DIR = 0x0019
FW_CFG_FILE_FIRST = 0x0020
FW_CFG_WRITE_CHANNEL = 0x4000
FW_CFG_ARCH_LOCAL = 0x8000
FW_CFG_ENTRY_MASK = 0x3FFF

FW_CFG_SIGNATURE_DATA = b"QEMU"
FW_CFG_VERSION_TRADITIONAL = 0x01    # FW_CFG_ID bit 0; bit 1 (DMA) stays clear
FW_CFG_MAX_FILE_PATH = 56            # name field size, NUL included

SELECTOR_PORT = 0
DATA_PORT = 1
SELECTOR_WIDTH = 2
_FILE_ENTRY = struct.Struct(">IHH56s")   # size, select, reserved, name (fw_cfg.rst)


def _file_directory(files: Mapping[str, bytes]) -> tuple[bytes, dict[int, bytes]]:
    """The FW_CFG_FILE_DIR item and the keyed file items.

    QEMU's fw_cfg_add_file() keeps the directory sorted by name (strcmp order) and renumbers
    the keys to match, so file i in name order has key FW_CFG_FILE_FIRST + i.
    """
    encoded = sorted((name.encode("ascii"), data) for name, data in files.items())
    directory = bytearray(struct.pack(">I", len(encoded)))
    items: dict[int, bytes] = {}
    for position, (name, data) in enumerate(encoded):
        if not name or len(name) >= FW_CFG_MAX_FILE_PATH or b"\0" in name:
            raise ValueError(f"fw_cfg file name {name!r} must be 1-55 ASCII characters")
        key = FW_CFG_FILE_FIRST + position
        if key > FW_CFG_ENTRY_MASK:
            raise ValueError(f"too many fw_cfg files ({len(encoded)})")
        directory += _FILE_ENTRY.pack(len(data), key, 0, name)
        items[key] = bytes(data)
    return bytes(directory), items


class FwCfg:
    """A fixed set of items; FW_CFG_SIGNATURE, FW_CFG_ID and FW_CFG_FILE_DIR always exist."""

    def __init__(self, items: Mapping[int, bytes] | None = None,
                 files: Mapping[str, bytes] | None = None) -> None:
        directory, file_items = _file_directory(files or {})
        self._items: dict[int, bytes] = {
            FW_CFG_SIGNATURE: FW_CFG_SIGNATURE_DATA,
            FW_CFG_ID: struct.pack("<I", FW_CFG_VERSION_TRADITIONAL),
            FW_CFG_FILE_DIR: directory,
        }
        for key, data in (items or {}).items():
            if key >= FW_CFG_FILE_FIRST and not key & FW_CFG_ARCH_LOCAL:
                raise ValueError(f"key {key:#x} is in the file range: pass it in files")
            self._items[key] = bytes(data)
        self._items.update(file_items)
        self._selector = FW_CFG_SIGNATURE
        self._offset = 0

    @classmethod
    def standard(cls, ram_size: int, nb_cpus: int, kernel: bytes, cmdline: str,
                 files: Mapping[str, bytes] | None = None, nographic: bool = False) -> FwCfg:
        """The items vtemu's firmware reads to boot a multiboot kernel.

        `nographic` defaults to what QEMU reports for the reference command line
        (`-display none` is not `-nographic`), so a guest sees the same value on both.
        """
        if "\0" in cmdline:
            raise ValueError("the kernel command line cannot contain NUL")
        cmdline_data = cmdline.encode("utf-8") + b"\0"
        items = {
            FW_CFG_RAM_SIZE: struct.pack("<Q", ram_size),
            FW_CFG_NOGRAPHIC: struct.pack("<H", int(nographic)),
            FW_CFG_NB_CPUS: struct.pack("<H", nb_cpus),
            FW_CFG_MAX_CPUS: struct.pack("<H", nb_cpus),
            FW_CFG_KERNEL_SIZE: struct.pack("<I", len(kernel)),
            FW_CFG_KERNEL_DATA: bytes(kernel),
            FW_CFG_CMDLINE_SIZE: struct.pack("<I", len(cmdline_data)),
            FW_CFG_CMDLINE_DATA: cmdline_data,
        }
        return cls(items, files)

    def item(self, key: int) -> bytes | None:
        """An item's full contents, for the host side (e.g. a loader mirroring firmware)."""
        return self._items.get(key)

    @property
    def selector(self) -> int:
        return self._selector

    # --- port I/O ----------------------------------------------------------------------------
    def io_read(self, offset: int, size: int) -> int:
        if offset != DATA_PORT:
            return 0                 # the selector is write-only
        # "An N-byte wide read ... returns the next N bytes ... in increasing address order":
        # little-endian packing keeps that order in memory.
        return int.from_bytes(bytes(self._next_byte() for _ in range(size)), "little")

    def io_write(self, offset: int, size: int, value: int) -> None:
        # The selector is 16 bits wide (a narrower or wider access is invalid in QEMU and
        # dropped); data writes are ignored in the legacy interface since QEMU 2.4.
        if offset == SELECTOR_PORT and size == SELECTOR_WIDTH:
            self._selector = value & 0xFFFF
            self._offset = 0

    def _next_byte(self) -> int:
        # Bit 14 (write channel) does not change what is read; unknown keys read as empty.
        data = self._items.get(self._selector & ~FW_CFG_WRITE_CHANNEL, b"")
        if self._offset >= len(data):
            return 0                 # past the end: 0x00 (fw_cfg.rst, "Data Register")
        byte = data[self._offset]
        self._offset += 1
        return byte
