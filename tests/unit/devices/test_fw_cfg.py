"""QEMU fw_cfg legacy I/O: selector/data protocol, standard items, file directory layout."""

from __future__ import annotations

import pytest

from vtemu.devices import fw_cfg
from vtemu.devices.fw_cfg import FwCfg

SELECTOR, DATA = 0, 1
KERNEL = bytes(range(256)) * 3 + b"tail"


def select(device: FwCfg, key: int) -> None:
    device.io_write(SELECTOR, 2, key)


def read_bytes(device: FwCfg, count: int) -> bytes:
    return bytes(device.io_read(DATA, 1) for _ in range(count))


def item(device: FwCfg, key: int, count: int) -> bytes:
    select(device, key)
    return read_bytes(device, count)


@pytest.fixture
def device() -> FwCfg:
    return FwCfg.standard(ram_size=128 << 20, nb_cpus=2, kernel=KERNEL, cmdline="console=ttyS0")


def test_signature_then_zeros_past_the_end(device: FwCfg) -> None:
    assert item(device, 0x0000, 8) == b"QEMU\0\0\0\0"


def test_id_advertises_only_the_traditional_interface(device: FwCfg) -> None:
    assert item(device, 0x0001, 4) == b"\x01\x00\x00\x00"


def test_numeric_items_are_little_endian(device: FwCfg) -> None:
    assert item(device, 0x0003, 8) == b"\x00\x00\x00\x08\x00\x00\x00\x00"
    assert item(device, 0x0005, 2) == b"\x02\x00"
    assert item(device, 0x000F, 2) == b"\x02\x00"
    assert item(device, 0x0004, 2) == b"\x00\x00"
    assert item(device, 0x0008, 4) == len(KERNEL).to_bytes(4, "little")


def test_kernel_data_streams_and_reselecting_rewinds(device: FwCfg) -> None:
    select(device, 0x0011)
    first = read_bytes(device, 100)
    rest = read_bytes(device, len(KERNEL) - 100)
    assert first + rest == KERNEL
    assert read_bytes(device, 3) == b"\0\0\0"
    select(device, 0x0011)
    assert read_bytes(device, 4) == KERNEL[:4]


def test_command_line_size_counts_the_nul(device: FwCfg) -> None:
    assert item(device, 0x0014, 4) == (14).to_bytes(4, "little")
    assert item(device, 0x0015, 15) == b"console=ttyS0\0\0"


def test_empty_command_line_is_a_lone_nul() -> None:
    device = FwCfg.standard(ram_size=2 << 20, nb_cpus=1, kernel=b"", cmdline="")
    assert item(device, 0x0014, 4) == b"\x01\x00\x00\x00"
    assert item(device, 0x0015, 2) == b"\0\0"
    assert item(device, 0x0008, 4) == b"\0\0\0\0"


def test_file_directory_layout_byte_for_byte() -> None:
    device = FwCfg.standard(ram_size=2 << 20, nb_cpus=1, kernel=b"", cmdline="",
                            files={"opt/z": b"", "etc/b": b"xyz", "etc/a": b"12345"})
    expected = (b"\x00\x00\x00\x03"
                + b"\x00\x00\x00\x05" + b"\x00\x20" + b"\x00\x00" + b"etc/a" + b"\0" * 51
                + b"\x00\x00\x00\x03" + b"\x00\x21" + b"\x00\x00" + b"etc/b" + b"\0" * 51
                + b"\x00\x00\x00\x00" + b"\x00\x22" + b"\x00\x00" + b"opt/z" + b"\0" * 51)
    assert len(expected) == 4 + 3 * 64
    assert item(device, 0x0019, len(expected) + 1) == expected + b"\0"
    assert item(device, 0x0020, 5) == b"12345"
    assert item(device, 0x0021, 4) == b"xyz\0"


def test_file_keys_follow_byte_order_of_names() -> None:
    device = FwCfg(files={"b": b"2", "B": b"1", "a": b"3"})
    assert [item(device, key, 1) for key in (0x20, 0x21, 0x22)] == [b"1", b"3", b"2"]


def test_no_files_gives_an_empty_directory() -> None:
    assert item(FwCfg(), 0x0019, 5) == b"\0" * 5


def test_unknown_key_reads_zeros(device: FwCfg) -> None:
    assert item(device, 0x0123, 4) == b"\0\0\0\0"
    assert item(device, 0x8003, 2) == b"\0\0"


def test_write_channel_bit_reads_the_same_item(device: FwCfg) -> None:
    assert item(device, 0x4000, 4) == b"QEMU"


def test_data_writes_and_narrow_selector_writes_are_ignored(device: FwCfg) -> None:
    select(device, 0x0000)
    device.io_write(DATA, 1, 0x41)
    device.io_write(SELECTOR, 1, 0x05)           # not a 16-bit access: dropped
    assert device.selector == 0x0000
    assert read_bytes(device, 4) == b"QEMU"


def test_wide_data_read_returns_bytes_in_memory_order(device: FwCfg) -> None:
    select(device, 0x0000)
    assert device.io_read(DATA, 4).to_bytes(4, "little") == b"QEMU"
    assert device.io_read(DATA, 1) == 0


@pytest.mark.parametrize("name", ["", "x" * 56, "bad\0name", "caf\u00e9"])
def test_invalid_file_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        FwCfg(files={name: b""})


def test_plain_items_cannot_hide_in_the_file_key_range() -> None:
    with pytest.raises(ValueError):
        FwCfg(items={0x0020: b"x"})


def test_key_constants_match_the_qemu_header() -> None:
    assert (fw_cfg.FW_CFG_KERNEL_CMDLINE, fw_cfg.FW_CFG_CMDLINE_SIZE, fw_cfg.FW_CFG_CMDLINE_DATA) == (0x09, 0x14, 0x15)
    assert (fw_cfg.FW_CFG_KERNEL_DATA, fw_cfg.FW_CFG_FILE_DIR, fw_cfg.FW_CFG_FILE_FIRST) == (0x11, 0x19, 0x20)
