"""ATA disk (ATA/ATAPI-6 subset): registers, IDENTIFY, PIO protocols with DRQ and INTRQ,
addressing and range errors, nIEN, SRST, the absent device 1, and the image file behind it."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from tests.unit.devices.fakes import RecordingLine
from vtemu.devices import ata_disk
from vtemu.devices.ata_disk import AtaDisk, DiskImage
from vtemu.devices.bus import PortBus
from vtemu.errors import BadInput

DATA, ERROR, COUNT, LBA_LOW, LBA_MID, LBA_HIGH, DEVICE, STATUS = range(8)
FEATURES = ERROR
COMMAND = STATUS
BSY, DRDY, DSC, DRQ, ERR = 0x80, 0x40, 0x10, 0x08, 0x01
ABRT, IDNF = 0x04, 0x10
NIEN, SRST = 0x02, 0x04
READY, READY_DRQ, READY_ERR = DRDY | DSC, DRDY | DSC | DRQ, DRDY | ERR
SECTORS = 600


def sector_bytes(lba: int) -> bytes:
    """The original contents of sector `lba`: every dword names its sector and position."""
    return struct.pack("<128I", *[(lba << 8 | i) ^ 0xA5000000 for i in range(128)])


@pytest.fixture
def image_path(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(b"".join(sector_bytes(lba) for lba in range(SECTORS)))
    return path


@pytest.fixture
def irq() -> RecordingLine:
    return RecordingLine()


@pytest.fixture
def disk(image_path: Path, irq: RecordingLine) -> AtaDisk:
    device = AtaDisk(DiskImage.open(image_path), irq)
    yield device
    device.close()


def file_sector(path: Path, lba: int) -> bytes:
    with path.open("rb") as f:
        f.seek(lba * 512)
        return f.read(512)


def issue(disk: AtaDisk, command: int, lba: int = 0, count: int = 1, features: int = 0,
          device: int | None = None) -> None:
    """Load the task file (LBA addressing, device 0 unless `device` says otherwise) and
    write the command."""
    disk.io_write(FEATURES, 1, features)
    disk.io_write(COUNT, 1, count)
    disk.io_write(LBA_LOW, 1, lba & 0xFF)
    disk.io_write(LBA_MID, 1, lba >> 8 & 0xFF)
    disk.io_write(LBA_HIGH, 1, lba >> 16 & 0xFF)
    disk.io_write(DEVICE, 1, 0xE0 | lba >> 24 & 0x0F if device is None else device)
    disk.io_write(COMMAND, 1, command)


def read_block(disk: AtaDisk, words: int = 256) -> bytes:
    return b"".join(disk.io_read(DATA, 2).to_bytes(2, "little") for _ in range(words))


def write_block(disk: AtaDisk, data: bytes) -> None:
    for i in range(0, len(data), 2):
        disk.io_write(DATA, 2, int.from_bytes(data[i:i + 2], "little"))


def task_file(disk: AtaDisk) -> tuple[int, int]:
    """(Sector Count, 28-bit LBA) as the registers read."""
    lba = (disk.io_read(DEVICE, 1) & 0x0F) << 24 | disk.io_read(LBA_HIGH, 1) << 16 \
        | disk.io_read(LBA_MID, 1) << 8 | disk.io_read(LBA_LOW, 1)
    return disk.io_read(COUNT, 1), lba


def alt_status(disk: AtaDisk) -> int:
    return disk.control.io_read(0, 1)


def words(block: bytes) -> list[int]:
    return list(struct.unpack("<256H", block))


# --- power-on and registers -----------------------------------------------------------------


def test_power_on_state_is_ready_with_the_signature(disk: AtaDisk, irq: RecordingLine) -> None:
    assert alt_status(disk) == READY
    assert disk.io_read(ERROR, 1) == 0x01             # diagnostics passed, no device 1
    assert [disk.io_read(r, 1) for r in (COUNT, LBA_LOW, LBA_MID, LBA_HIGH, DEVICE)] == \
        [0x01, 0x01, 0x00, 0x00, 0x00]
    assert disk.io_read(STATUS, 1) == READY
    assert irq.levels == []


def test_task_file_registers_read_back(disk: AtaDisk) -> None:
    for offset, value in ((COUNT, 0x12), (LBA_LOW, 0x34), (LBA_MID, 0x56), (LBA_HIGH, 0x78),
                          (DEVICE, 0xE5)):
        disk.io_write(offset, 1, value)
        assert disk.io_read(offset, 1) == value


def test_wider_register_accesses_split_into_bytes(disk: AtaDisk) -> None:
    disk.io_write(COUNT, 2, 0x3402)                    # Sector Count and LBA Low
    assert (disk.io_read(COUNT, 1), disk.io_read(LBA_LOW, 1)) == (0x02, 0x34)
    disk.io_write(LBA_MID, 2, 0x7856)
    assert disk.io_read(LBA_LOW, 4) == 0x00785634     # through Device (00h at power-on)
    assert disk.io_read(STATUS, 2) == 0xFF00 | READY  # 1F8h is not the disk's


# --- IDENTIFY DEVICE ------------------------------------------------------------------------


def test_identify_block_fields(disk: AtaDisk) -> None:
    w = words(disk.identify_block())
    assert w[0] == 0x0040 and not w[0] & 0x8000      # an ATA device
    assert (w[60] | w[61] << 16) == SECTORS          # LBA28 capacity
    assert w[49] & 0x0200                             # LBA supported
    assert not w[49] & 0x0100                         # no DMA
    assert w[50] == 0x4000
    assert w[83] & 0xC000 == 0x4000 and w[84] & 0xC000 == 0x4000 and w[87] & 0xC000 == 0x4000
    assert not w[83] & 0x0400                         # no 48-bit addressing
    assert w[47] == 0x8010                            # READ/WRITE MULTIPLE up to 16
    assert w[59] == 0                                 # multiple mode off at power-on
    assert w[93] & 0xC040 == 0x4040                   # valid; device 0 answers for device 1
    assert (w[1], w[3], w[6]) == ata_disk.default_geometry(SECTORS)


def test_identify_strings_have_the_ata_byte_order(disk: AtaDisk) -> None:
    block = disk.identify_block()

    def text(first_word: int, count: int) -> str:
        raw = block[2 * first_word:2 * (first_word + count)]
        return bytes(raw[i ^ 1] for i in range(len(raw))).decode("ascii")

    assert text(27, 20) == "vtemu ATA disk".ljust(40)
    assert text(10, 10) == "VTEMU00000001".ljust(20)
    assert text(23, 4) == "1.0".ljust(8)
    assert block[54:56] == b"tv"                      # "vt": first character in the high byte


def test_identify_integrity_word(disk: AtaDisk) -> None:
    block = disk.identify_block()
    assert block[510] == 0xA5
    assert sum(block) % 256 == 0


def test_default_geometry() -> None:
    assert ata_disk.default_geometry(8192) == (8, 16, 63)
    assert ata_disk.default_geometry(100_000_000) == (16383, 16, 63)
    assert ata_disk.default_geometry(600) == (1, 9, 63)
    assert ata_disk.default_geometry(10) == (1, 1, 10)


def test_identify_is_pio_data_in_with_one_interrupt(disk: AtaDisk, irq: RecordingLine) -> None:
    disk.io_write(DEVICE, 1, 0xA0)
    disk.io_write(COMMAND, 1, 0xEC)
    assert irq.level and irq.rising_edges == 1
    assert alt_status(disk) == READY_DRQ
    assert irq.level                                  # Alternate Status acknowledges nothing
    assert disk.io_read(STATUS, 1) == READY_DRQ
    assert not irq.level                              # Status does
    assert read_block(disk) == disk.identify_block()
    assert alt_status(disk) == READY
    assert irq.rising_edges == 1                      # none after the last (only) block
    assert disk.io_read(DATA, 2) == 0                 # DRQ clear: nothing more to read


# --- READ SECTOR(S) ---------------------------------------------------------------------------


def test_read_sectors_interrupts_per_sector_and_not_after_the_last(
        disk: AtaDisk, irq: RecordingLine) -> None:
    issue(disk, 0x20, lba=10, count=3)
    data = b""
    for sector in range(3):
        assert irq.rising_edges == sector + 1
        assert disk.io_read(STATUS, 1) == READY_DRQ
        # the sector is in the buffer: the task file has moved on to the next one
        assert task_file(disk) == (2 - sector, 11 + sector)
        data += read_block(disk)
    assert data == b"".join(sector_bytes(lba) for lba in (10, 11, 12))
    assert irq.rising_edges == 3 and not irq.level
    assert disk.io_read(STATUS, 1) == READY
    assert task_file(disk) == (0, 13)


def test_read_without_retry_is_the_same_command(disk: AtaDisk) -> None:
    issue(disk, 0x21, lba=7, count=1)
    assert read_block(disk) == sector_bytes(7)


def test_sector_count_zero_means_256(disk: AtaDisk, irq: RecordingLine) -> None:
    issue(disk, 0x20, lba=100, count=0)
    data = bytearray()
    for _ in range(256):
        assert disk.io_read(STATUS, 1) == READY_DRQ
        data += read_block(disk)
    assert data == b"".join(sector_bytes(lba) for lba in range(100, 356))
    assert irq.rising_edges == 256
    assert disk.io_read(STATUS, 1) == READY
    assert task_file(disk) == (0, 356)


def test_data_port_access_widths(disk: AtaDisk) -> None:
    issue(disk, 0x20, lba=3)
    expected = sector_bytes(3)
    assert disk.io_read(DATA, 4) == int.from_bytes(expected[0:4], "little")   # two words
    assert disk.io_read(DATA, 1) == expected[4]       # one word strobe, the low byte seen
    assert disk.io_read(DATA, 2) == int.from_bytes(expected[6:8], "little")


def test_string_io_bulk_path_matches_single_accesses(image_path: Path) -> None:
    one, other = (AtaDisk(DiskImage.open(image_path), RecordingLine()) for _ in range(2))
    for device in (one, other):
        issue(device, 0x20, lba=20, count=3)
    singles = read_block(one, 3 * 256 + 5)             # 5 words past the end: DRQ clear
    bulk = other.io_read_string(DATA, 2, 3 * 256 + 5)
    assert bulk == singles
    assert bulk[:1536] == b"".join(sector_bytes(lba) for lba in (20, 21, 22))
    assert other.io_read_string(DATA, 4, 2) == b"\0" * 8
    for device in (one, other):
        issue(device, 0x30, lba=30, count=2)
    payload = bytes(range(256)) * 4
    write_block(one, payload)
    other.io_write_string(DATA, 4, payload)
    assert file_sector(image_path, 30) + file_sector(image_path, 31) == payload
    assert one.status == other.status == READY
    one.close()
    other.close()


# --- WRITE SECTOR(S) --------------------------------------------------------------------------


def test_write_sectors_protocol_and_write_through(
        disk: AtaDisk, irq: RecordingLine, image_path: Path) -> None:
    issue(disk, 0x30, lba=40, count=2)
    assert alt_status(disk) == READY_DRQ
    assert irq.rising_edges == 0                      # no interrupt before the first block
    assert task_file(disk) == (2, 40)
    write_block(disk, b"\x11" * 512)
    assert irq.rising_edges == 1                      # the sector is written ...
    assert file_sector(image_path, 40) == b"\x11" * 512   # ... and in the file already
    assert disk.io_read(STATUS, 1) == READY_DRQ
    assert task_file(disk) == (1, 41)
    write_block(disk, b"\x22" * 512)
    assert irq.rising_edges == 2                      # data-out interrupts after the last one
    assert disk.io_read(STATUS, 1) == READY
    assert task_file(disk) == (0, 42)
    assert file_sector(image_path, 41) == b"\x22" * 512
    assert file_sector(image_path, 42) == sector_bytes(42)


def test_write_count_zero_writes_256_sectors(disk: AtaDisk, image_path: Path) -> None:
    issue(disk, 0x31, lba=200, count=0)
    for lba in range(200, 456):
        assert alt_status(disk) == READY_DRQ
        write_block(disk, lba.to_bytes(2, "little") * 256)
        disk.io_read(STATUS, 1)
    assert alt_status(disk) == READY
    assert all(file_sector(image_path, lba) == lba.to_bytes(2, "little") * 256
               for lba in range(200, 456))
    assert file_sector(image_path, 456) == sector_bytes(456)


def test_a_half_written_sector_never_reaches_the_file(disk: AtaDisk, image_path: Path) -> None:
    issue(disk, 0x30, lba=50)
    write_block(disk, b"\x33" * 510)
    assert file_sector(image_path, 50) == sector_bytes(50)
    issue(disk, 0x20, lba=50)                         # a new command abandons the write
    assert read_block(disk) == sector_bytes(50)


def test_data_register_writes_without_drq_are_dropped(disk: AtaDisk, image_path: Path) -> None:
    write_block(disk, b"\x44" * 512)
    assert alt_status(disk) == READY
    assert file_sector(image_path, 0) == sector_bytes(0)


def test_written_data_survives_reopening(image_path: Path) -> None:
    first = AtaDisk(DiskImage.open(image_path), RecordingLine())
    issue(first, 0x30, lba=SECTORS - 1)
    write_block(first, b"\x55" * 512)
    first.close()
    assert first.image.closed
    second = AtaDisk(DiskImage.open(image_path), RecordingLine())
    issue(second, 0x20, lba=SECTORS - 1)
    assert read_block(second) == b"\x55" * 512
    second.close()


# --- READ/WRITE MULTIPLE ----------------------------------------------------------------------


def test_read_multiple_needs_multiple_mode(disk: AtaDisk) -> None:
    issue(disk, 0xC4, lba=0, count=4)
    assert (disk.io_read(STATUS, 1), disk.io_read(ERROR, 1)) == (READY_ERR, ABRT)


@pytest.mark.parametrize("count", [3, 32, 255])
def test_set_multiple_mode_refuses_unsupported_block_sizes(disk: AtaDisk, count: int) -> None:
    issue(disk, 0xC6, count=count)
    assert (disk.io_read(STATUS, 1), disk.io_read(ERROR, 1)) == (READY_ERR, ABRT)
    assert words(disk.identify_block())[59] == 0


def test_read_and_write_multiple_use_blocks_with_one_interrupt_each(
        disk: AtaDisk, irq: RecordingLine, image_path: Path) -> None:
    issue(disk, 0xC6, count=4)
    assert disk.io_read(STATUS, 1) == READY
    assert words(disk.identify_block())[59] == 0x0104
    edges = irq.rising_edges
    issue(disk, 0xC4, lba=60, count=10)               # blocks of 4, 4, 2
    data = b""
    for block in (4, 4, 2):
        assert disk.io_read(STATUS, 1) == READY_DRQ
        data += read_block(disk, 256 * block)
    assert data == b"".join(sector_bytes(lba) for lba in range(60, 70))
    assert irq.rising_edges - edges == 3
    assert disk.io_read(STATUS, 1) == READY
    issue(disk, 0xC5, lba=80, count=6)                # blocks of 4, 2
    assert alt_status(disk) == READY_DRQ
    write_block(disk, b"\x66" * 2048)
    assert disk.io_read(STATUS, 1) == READY_DRQ
    write_block(disk, b"\x77" * 1024)
    assert disk.io_read(STATUS, 1) == READY
    assert irq.rising_edges - edges == 5
    assert [file_sector(image_path, lba)[0] for lba in range(80, 87)] == \
        [0x66] * 4 + [0x77] * 2 + [sector_bytes(86)[0]]
    issue(disk, 0xC6, count=0)                        # disables multiple mode
    assert disk.io_read(STATUS, 1) == READY
    assert words(disk.identify_block())[59] == 0


# --- range errors -----------------------------------------------------------------------------


def test_read_beyond_the_media_aborts(disk: AtaDisk, irq: RecordingLine) -> None:
    issue(disk, 0x20, lba=SECTORS + 5, count=3)
    assert irq.rising_edges == 1
    assert disk.io_read(STATUS, 1) == READY_ERR
    assert disk.io_read(ERROR, 1) == ABRT
    assert task_file(disk) == (3, SECTORS + 5)        # the failing address, nothing transferred
    assert disk.io_read(DATA, 2) == 0


def test_read_across_the_end_transfers_the_sectors_before_it(
        disk: AtaDisk, irq: RecordingLine) -> None:
    issue(disk, 0x20, lba=SECTORS - 2, count=4)
    assert disk.io_read(STATUS, 1) == READY_DRQ
    assert read_block(disk) == sector_bytes(SECTORS - 2)
    assert disk.io_read(STATUS, 1) == READY_DRQ
    assert read_block(disk) == sector_bytes(SECTORS - 1)
    assert irq.rising_edges == 3                      # two sectors, then the error
    assert (disk.io_read(STATUS, 1), disk.io_read(ERROR, 1)) == (READY_ERR, ABRT)
    assert task_file(disk) == (2, SECTORS)


def test_write_across_the_end_stops_at_the_first_sector_outside(
        disk: AtaDisk, irq: RecordingLine, image_path: Path) -> None:
    issue(disk, 0x30, lba=SECTORS - 1, count=2)
    write_block(disk, b"\x88" * 512)
    assert irq.rising_edges == 1
    assert (disk.io_read(STATUS, 1), disk.io_read(ERROR, 1)) == (READY_ERR, ABRT)
    assert task_file(disk) == (1, SECTORS)
    assert file_sector(image_path, SECTORS - 1) == b"\x88" * 512
    assert image_path.stat().st_size == SECTORS * 512  # the file never grows


def test_write_starting_beyond_the_end_fails_without_drq(disk: AtaDisk, irq: RecordingLine) -> None:
    issue(disk, 0x30, lba=SECTORS, count=1)
    assert irq.rising_edges == 1
    assert disk.io_read(STATUS, 1) == READY_ERR


def test_a_multiple_block_reaching_beyond_the_end_is_not_transferred(disk: AtaDisk) -> None:
    issue(disk, 0xC6, count=4)
    disk.io_read(STATUS, 1)
    issue(disk, 0xC4, lba=SECTORS - 6, count=8)
    assert disk.io_read(STATUS, 1) == READY_DRQ
    assert read_block(disk, 1024)[:512] == sector_bytes(SECTORS - 6)
    assert (disk.io_read(STATUS, 1), disk.io_read(ERROR, 1)) == (READY_ERR, ABRT)
    assert task_file(disk) == (4, SECTORS)


def test_read_verify(disk: AtaDisk, irq: RecordingLine) -> None:
    issue(disk, 0x40, lba=100, count=5)
    assert irq.rising_edges == 1
    assert disk.io_read(STATUS, 1) == READY
    assert task_file(disk) == (0, 105)
    issue(disk, 0x41, lba=SECTORS - 2, count=5)
    assert (disk.io_read(STATUS, 1), disk.io_read(ERROR, 1)) == (READY_ERR, ABRT)
    assert task_file(disk) == (3, SECTORS)


def test_lba28_uses_device_bits_3_to_0(disk: AtaDisk) -> None:
    issue(disk, 0x20, lba=0x1000000 + 4)              # LBA bit 24 set: far beyond the media
    assert disk.io_read(STATUS, 1) == READY_ERR
    assert task_file(disk)[1] == 0x1000004


# --- CHS addressing ---------------------------------------------------------------------------


def chs_issue(disk: AtaDisk, command: int, cylinder: int, head: int, sector: int,
              count: int = 1) -> None:
    disk.io_write(COUNT, 1, count)
    disk.io_write(LBA_LOW, 1, sector)
    disk.io_write(LBA_MID, 1, cylinder & 0xFF)
    disk.io_write(LBA_HIGH, 1, cylinder >> 8)
    disk.io_write(DEVICE, 1, 0xA0 | head)
    disk.io_write(COMMAND, 1, command)


def test_chs_addressing_through_the_default_translation(disk: AtaDisk) -> None:
    _, heads, per_track = ata_disk.default_geometry(SECTORS)
    chs_issue(disk, 0x20, cylinder=0, head=1, sector=per_track, count=2)
    # the task file in CHS form: the next sector is head 2, sector 1
    assert [disk.io_read(r, 1) for r in (COUNT, LBA_LOW, LBA_MID, LBA_HIGH)] == [1, 1, 0, 0]
    assert disk.io_read(DEVICE, 1) == 0xA2
    assert read_block(disk) == sector_bytes(2 * per_track - 1)
    assert read_block(disk) == sector_bytes(2 * per_track)
    assert [disk.io_read(r, 1) for r in (COUNT, LBA_LOW, LBA_MID, LBA_HIGH)] == [0, 2, 0, 0]


@pytest.mark.parametrize("cylinder, head, sector", [(0, 0, 0), (0, 0, 64), (0, 15, 1), (9, 0, 1)])
def test_chs_outside_the_translation_is_idnf(disk: AtaDisk, cylinder: int, head: int,
                                             sector: int) -> None:
    chs_issue(disk, 0x20, cylinder, head, sector)
    assert (disk.io_read(STATUS, 1), disk.io_read(ERROR, 1)) == (READY_ERR, IDNF)


def test_initialize_device_parameters_sets_the_translation(disk: AtaDisk) -> None:
    disk.io_write(COUNT, 1, 10)                       # 10 sectors per track
    disk.io_write(DEVICE, 1, 0xA0 | 3)                # 4 heads
    disk.io_write(COMMAND, 1, 0x91)
    assert disk.io_read(STATUS, 1) == READY
    w = words(disk.identify_block())
    assert w[54:59] == [15, 4, 10, 600, 0]            # current C/H/S and capacity
    chs_issue(disk, 0x20, cylinder=2, head=3, sector=5)
    assert read_block(disk) == sector_bytes((2 * 4 + 3) * 10 + 4)
    disk.io_write(COUNT, 1, 0)                        # no sectors: an invalid translation
    disk.io_write(COMMAND, 1, 0x91)
    assert disk.io_read(STATUS, 1) == READY
    chs_issue(disk, 0x20, cylinder=0, head=0, sector=1)
    assert (disk.io_read(STATUS, 1), disk.io_read(ERROR, 1)) == (READY_ERR, IDNF)
    issue(disk, 0x20, lba=1)                          # LBA does not care
    assert read_block(disk) == sector_bytes(1)


# --- other commands ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", [0x00, 0xC8, 0xCA, 0x24, 0x34, 0xE5, 0xB0, 0xFF])
def test_unsupported_commands_abort(disk: AtaDisk, irq: RecordingLine, command: int) -> None:
    issue(disk, command)
    assert irq.rising_edges == 1
    assert (disk.io_read(STATUS, 1), disk.io_read(ERROR, 1)) == (READY_ERR, ABRT)


@pytest.mark.parametrize("mode, ok", [(0x00, True), (0x01, True), (0x08, True), (0x0C, True),
                                      (0x0D, False), (0x22, False), (0x42, False)])
def test_set_features_transfer_mode(disk: AtaDisk, mode: int, ok: bool) -> None:
    issue(disk, 0xEF, features=0x03, count=mode)
    assert disk.io_read(STATUS, 1) == (READY if ok else READY_ERR)


@pytest.mark.parametrize("subcommand", [0x02, 0x82, 0xAA, 0x55, 0x66])
def test_other_set_features_subcommands_abort(disk: AtaDisk, subcommand: int) -> None:
    issue(disk, 0xEF, features=subcommand)
    assert (disk.io_read(STATUS, 1), disk.io_read(ERROR, 1)) == (READY_ERR, ABRT)


def test_execute_device_diagnostic_reloads_the_signature(disk: AtaDisk, irq: RecordingLine) -> None:
    issue(disk, 0xFF)                                 # leave an error behind
    disk.io_read(STATUS, 1)
    issue(disk, 0x90, lba=0x123456, count=9)
    assert irq.rising_edges == 2
    assert disk.io_read(STATUS, 1) == READY
    assert disk.io_read(ERROR, 1) == 0x01
    assert [disk.io_read(r, 1) for r in (COUNT, LBA_LOW, LBA_MID, LBA_HIGH, DEVICE)] == \
        [1, 1, 0, 0, 0]


def test_flush_cache_syncs_the_file(disk: AtaDisk, irq: RecordingLine,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(ata_disk.os, "fsync", synced.append)
    issue(disk, 0xE7)
    assert irq.rising_edges == 1 and disk.io_read(STATUS, 1) == READY
    assert len(synced) == 1


def test_a_command_during_a_transfer_abandons_it(disk: AtaDisk) -> None:
    issue(disk, 0x20, lba=5, count=3)
    read_block(disk, 100)
    issue(disk, 0x20, lba=9)
    assert disk.io_read(STATUS, 1) == READY_DRQ
    assert read_block(disk) == sector_bytes(9)
    assert disk.io_read(STATUS, 1) == READY


# --- interrupts: acknowledge, nIEN ------------------------------------------------------------


def test_writing_the_command_register_clears_a_pending_interrupt(
        disk: AtaDisk, irq: RecordingLine) -> None:
    issue(disk, 0xE7)
    assert irq.level
    issue(disk, 0x40, lba=1)                          # a new command: the old interrupt goes
    assert irq.levels[-2:] == [False, True]


def test_nien_masks_intrq_but_the_interrupt_stays_pending(
        disk: AtaDisk, irq: RecordingLine) -> None:
    disk.control.io_write(0, 1, NIEN)
    issue(disk, 0x20, lba=1)
    assert alt_status(disk) == READY_DRQ and not irq.level
    assert disk.interrupt_pending
    disk.control.io_write(0, 1, 0)                    # the tri-state buffer opens
    assert irq.level and irq.rising_edges == 1
    disk.control.io_write(0, 1, NIEN)
    assert not irq.level
    assert disk.io_read(STATUS, 1) == READY_DRQ       # acknowledged while masked
    disk.control.io_write(0, 1, 0)
    assert not irq.level and irq.rising_edges == 1


def test_polled_transfer_with_nien_never_drives_intrq(disk: AtaDisk, irq: RecordingLine) -> None:
    disk.control.io_write(0, 1, NIEN)
    issue(disk, 0x30, lba=3, count=2)
    for _ in range(2):
        assert alt_status(disk) & (BSY | DRQ) == DRQ
        write_block(disk, b"\x99" * 512)
    assert disk.io_read(STATUS, 1) == READY
    disk.control.io_write(0, 1, 0)
    assert irq.levels == []


# --- software reset ---------------------------------------------------------------------------


def test_srst_holds_bsy_then_leaves_the_signature_without_an_interrupt(
        disk: AtaDisk, irq: RecordingLine) -> None:
    issue(disk, 0x20, lba=0x42, count=2)              # a transfer in progress, INTRQ high
    assert irq.level
    disk.control.io_write(0, 1, SRST)
    assert not irq.level                              # the reset drops the interrupt
    assert alt_status(disk) & BSY and disk.io_read(STATUS, 1) & BSY
    disk.io_write(COMMAND, 1, 0xEC)                   # ignored while BSY
    disk.io_write(COUNT, 1, 0x77)
    assert disk.io_read(STATUS, 1) & BSY
    disk.control.io_write(0, 1, 0)
    assert alt_status(disk) == READY
    assert disk.io_read(ERROR, 1) == 0x01
    assert [disk.io_read(r, 1) for r in (COUNT, LBA_LOW, LBA_MID, LBA_HIGH, DEVICE)] == \
        [1, 1, 0, 0, 0]
    assert irq.rising_edges == 1                      # the read's, none from the reset
    assert disk.io_read(DATA, 2) == 0                 # the transfer is gone


# --- the absent device 1 ----------------------------------------------------------------------


def test_device_1_reads_status_00(disk: AtaDisk) -> None:
    disk.io_write(DEVICE, 1, 0xB0)
    assert disk.io_read(STATUS, 1) == 0x00
    assert alt_status(disk) == 0x00
    disk.io_write(COUNT, 1, 0x5A)                     # device 0 takes the register writes
    assert disk.io_read(COUNT, 1) == 0x5A
    assert disk.io_read(DEVICE, 1) == 0xB0


def test_commands_to_device_1_are_ignored_but_diagnostics(disk: AtaDisk,
                                                           irq: RecordingLine) -> None:
    issue(disk, 0xEC, device=0xB0)
    issue(disk, 0x20, device=0xF0)
    assert irq.levels == [] and not disk.interrupt_pending
    disk.io_write(DEVICE, 1, 0xA0)
    assert disk.io_read(STATUS, 1) == READY
    issue(disk, 0x90, device=0xB0)                    # EXECUTE DEVICE DIAGNOSTIC: device 0 runs it
    assert irq.rising_edges == 1
    assert disk.io_read(DEVICE, 1) == 0x00            # and device 0 is selected after it
    assert disk.io_read(ERROR, 1) == 0x01


def test_a_deselected_device_releases_intrq(disk: AtaDisk, irq: RecordingLine) -> None:
    issue(disk, 0xE7)
    assert irq.level
    disk.io_write(DEVICE, 1, 0xB0)
    assert not irq.level
    assert disk.io_read(STATUS, 1) == 0x00            # device 1's status: no acknowledge
    disk.io_write(DEVICE, 1, 0xA0)
    assert irq.level and irq.rising_edges == 2
    disk.io_read(STATUS, 1)
    assert not irq.level


# --- on the port bus --------------------------------------------------------------------------


def test_on_the_pc_port_bus(image_path: Path, irq: RecordingLine) -> None:
    disk = ata_disk.open_disk(image_path, irq)
    bus = PortBus()
    bus.attach("ata0", ata_disk.PRIMARY_COMMAND_BASE, ata_disk.COMMAND_BLOCK_SIZE, disk,
               byte_wide=False)
    bus.attach("ata0-control", ata_disk.PRIMARY_CONTROL_PORT, 1, disk.control)
    bus.write(0x1F6, 1, 0xE0)
    bus.write(0x1F2, 1, 1)
    bus.write(0x1F3, 2, 0x0002)                       # LBA Low 2, LBA Mid 0
    bus.write(0x1F5, 1, 0)
    bus.write(0x1F7, 1, 0x20)
    assert bus.read(0x3F6, 1) == READY_DRQ
    data = b"".join(bus.read(0x1F0, 4).to_bytes(4, "little") for _ in range(128))
    assert data == sector_bytes(2)
    assert bus.read(0x1F7, 1) == READY
    bus.write(0x3F6, 2, SRST)                         # byte-wide: 3F7h is not the disk's
    assert bus.read(0x3F6, 1) & BSY
    disk.close()


# --- the image file ---------------------------------------------------------------------------


def test_image_geometry(image_path: Path) -> None:
    image = DiskImage.open(image_path)
    assert image.sectors == SECTORS
    image.close()
    assert image.closed


@pytest.mark.parametrize("size, message", [
    (0, "is empty"),
    (1000, "not a multiple of 512"),
    (512 * 3 + 1, "not a multiple of 512"),
])
def test_bad_image_sizes(tmp_path: Path, size: int, message: str) -> None:
    path = tmp_path / "bad.img"
    path.write_bytes(b"\0" * size)
    with pytest.raises(BadInput, match=message) as error:
        DiskImage.open(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_image(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        DiskImage.open(tmp_path / "none.img")


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="is a directory"):
        DiskImage.open(tmp_path)


def test_image_too_large_for_lba28(tmp_path: Path) -> None:
    path = tmp_path / "huge.img"
    with path.open("wb") as f:
        f.truncate((ata_disk.LBA28_MAX_SECTORS + 1) * 512)   # sparse
    with pytest.raises(BadInput, match="LBA28"):
        DiskImage.open(path)


def test_unwritable_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(ata_disk.os, "open", refuse)
    with pytest.raises(BadInput, match="permission denied"):
        DiskImage.open(tmp_path / "any.img")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may open any file for writing")
def test_read_only_image_file(image_path: Path) -> None:
    image_path.chmod(0o444)
    with pytest.raises(BadInput, match="permission denied"):
        DiskImage.open(image_path)


def test_other_open_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def fail(*args: object, **kwargs: object) -> int:
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(ata_disk.os, "open", fail)
    with pytest.raises(BadInput, match="Input/output error"):
        DiskImage.open(tmp_path / "x.img")
