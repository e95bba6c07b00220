"""An ATA hard disk on the PC's primary IDE channel, backed by a raw image file.

Register set, status/error bits, command protocols and the IDENTIFY DEVICE layout follow
ATA/ATAPI-6 (T13/1410D rev. 3b, "ATA-6"); section names in comments refer to it. The disk is
device 0 (master) of the channel as the PC/AT wires it: command block registers at 1F0h-1F7h,
control block register at 3F6h, INTRQ on IRQ 14 (the slave 8259's IR6). Where ATA-6 leaves
a value open, the model takes the one QEMU's IDE disk shows (checked with a probe guest on
QEMU 7.2), so that a guest prints the same on both; the places where they still differ are
listed at the end.

* Untimed. Every command completes when its command byte (or last data word) is written: the
  device goes straight from one stable state to the next, so BSY is never observed set,
  except while the host holds SRST (ATA-6 "Software reset protocol": BSY stays set until the
  host clears SRST; the status then reads D0h, BSY with the other bits invalid). A driver
  that polls BSY/DRQ or waits for INTRQ works unchanged; one that relies on catching BSY
  after a command would be wrong on fast real drives too.
* Device 1 is absent. ATA-6 "Device 0 only configurations": with device 1 selected, device 0
  answers Status and Alternate Status with 00h, serves the other registers (and Device
  Control) as if it were selected, and ignores every command but EXECUTE DEVICE DIAGNOSTIC.
  So a driver probing for a slave reads 00h -- not a floating FFh or 7Fh -- as on a real
  single-drive cable and on QEMU with one drive; IDENTIFY word 93 bit 6 says so. A deselected
  device releases INTRQ (ATA-6 "INTRQ"), so its pending interrupt reaches the PIC only once
  it is selected again.
* Interrupts (ATA-6 "PIO data-in", "PIO data-out" and "Non-data" command protocols): a data-in
  command (IDENTIFY, READ) interrupts each time a DRQ block is ready, and not after the last
  block is read; a data-out command (WRITE) sets DRQ for the first block without an interrupt
  and interrupts after each block is written, the last one included; non-data commands and
  errors interrupt at completion. The interrupt stays pending until the host reads Status
  (not Alternate Status), writes the Command register, or resets the device. INTRQ = pending
  and nIEN clear and device 0 selected; the 8259 sees its edges. Clearing nIEN with an
  interrupt pending therefore asserts INTRQ (ATA-6 "nIEN": the tri-state buffer is enabled).
* Status: DRDY and DSC (obsolete "device seek complete", still set by drives) when idle, DRQ
  added while a block waits; ERR with DRDY (41h) when a command fails.
* Addressing: LBA28 (Device bit 6) and CHS through the current translation (default 16 heads
  x 63 sectors, as IDENTIFY words 1/3/6 report; INITIALIZE DEVICE PARAMETERS changes it; with
  an invalid translation CHS accesses fail with IDNF). The task file follows the media: when
  sectors move between media and buffer (for a read, before its DRQ; for a write, after its
  data arrived) the Sector Count drops by as many and the address moves to the next sector.
  So after a successful command the count is 0 and the address is one past the last sector
  (ATA-6 leaves both unspecified, "na"). A DRQ block reaching beyond the media is not
  transferred: the command ends with ABRT (ATA-6 allows ABRT or IDNF for an address outside
  the user-addressable range), the address registers naming the first sector outside it and
  the count the sectors not transferred (READ SECTOR(S) "Error outputs"), after the blocks
  before it were transferred normally.
* Data register: 16 bits, one word per access. A 32-bit access moves two words (PCI IDE
  controllers pack them: 32-bit PIO); an 8-bit access is one word strobe of which the host
  sees, or drives, only the low byte. With DRQ clear a read gives 0000h (indeterminate in ATA)
  and a write is dropped. Wider accesses to the other registers are split into byte accesses,
  as the ISA bus does for a register without IOCS16- (bytes beyond 1F7h read FFh: unclaimed).
* Writing the Command register while a transfer is in progress abandons it (ATA-6 forbids
  the host to; the outcome is the device's choice) and the new command starts.
* Commands: IDENTIFY DEVICE, READ SECTOR(S), WRITE SECTOR(S) (with and without retries),
  READ VERIFY SECTOR(S), READ MULTIPLE, WRITE MULTIPLE, SET MULTIPLE MODE (1-16 sectors per
  block; 0 disables), INITIALIZE DEVICE PARAMETERS, EXECUTE DEVICE DIAGNOSTIC, FLUSH CACHE,
  and SET FEATURES 03h with a PIO mode (0-4). Every other command and subcommand ends with
  ERR and ABRT, as ATA-6 requires of an unsupported one: this is a PIO-only, LBA28-only
  subset (no DMA, no 48-bit addressing, no power management, no SMART, no security). The HOB
  bit of Device Control is ignored (there are no 48-bit registers).

Persistence: write-through. Each sector goes to the image file with one pwrite() when its
DRQ block is complete, and reads always come from the file, so nothing is ever held only in
vtemu: however a run ends (the guest exits, a triple fault, a limit, Ctrl-C, even vtemu
crashing), every sector of every completed block is in the file. A block the host had not
finished when the run stopped is not written at all, as a real drive loses it on power
failure. FLUSH CACHE also fsync()s the file, against the host itself going down.

Where QEMU 7.2's IDE disk differs: it accepts SET FEATURES for DMA modes (it has a bus-master
DMA engine); READ VERIFY SECTOR(S) neither checks the range nor updates the registers; it
does not assert INTRQ when nIEN is cleared with an interrupt pending; after a software reset
it keeps the device selected before the reset (ATA-6: the Device register reads 00h, device
0); its Device register reads back bits 7 and 5 set; it leaves the integrity word (255) zero.
"""

from __future__ import annotations

import os
import struct
import weakref
from enum import IntEnum, IntFlag
from pathlib import Path

from vtemu.devices.bus import IrqLine
from vtemu.errors import BadInput

SECTOR_SIZE = 512
WORDS_PER_SECTOR = SECTOR_SIZE // 2
LBA28_MAX_SECTORS = 0x0FFFFFFF          # IDENTIFY words 60-61 hold at most 0FFFFFFFh sectors

# PC/AT wiring of the primary channel (the "legacy mode" addresses of PCI IDE controllers).
PRIMARY_COMMAND_BASE = 0x1F0
PRIMARY_CONTROL_PORT = 0x3F6
PRIMARY_IRQ = 14

# Command block register offsets (selected by CS0- with DA2:0; "I/O register descriptions").
DATA = 0
ERROR_FEATURES = 1
SECTOR_COUNT = 2
LBA_LOW = 3                  # Sector Number in CHS addressing
LBA_MID = 4                  # Cylinder Low
LBA_HIGH = 5                 # Cylinder High
DEVICE = 6                   # Device/Head
STATUS_COMMAND = 7
COMMAND_BLOCK_SIZE = 8

NO_DATA = 0x0000             # a data register read with DRQ clear (indeterminate in ATA)


class Status(IntFlag):
    ERR = 0x01
    IDX = 0x02               # obsolete
    CORR = 0x04              # obsolete
    DRQ = 0x08
    DSC = 0x10               # "device seek complete" (ATA-3); command dependent since ATA-6
    DF = 0x20
    DRDY = 0x40
    BSY = 0x80


class Error(IntFlag):
    AMNF = 0x01              # obsolete
    NM = 0x02
    ABRT = 0x04
    MCR = 0x08
    IDNF = 0x10
    MC = 0x20
    UNC = 0x40
    ICRC = 0x80


class DeviceControl(IntFlag):
    NIEN = 0x02
    SRST = 0x04
    HOB = 0x80


DEVICE_LBA = 0x40            # Device register: LBA addressing
DEVICE_DEV = 0x10            # Device register: device 1 selected
DEVICE_HEAD = 0x0F           # head number, or LBA bits 27:24

DIAGNOSTIC_PASSED = 0x01     # EXECUTE DEVICE DIAGNOSTIC code: device 0 passed, device 1 absent
# The signature of a non-PACKET device after reset or diagnostics ("Signature and
# persistence"): Sector Count, LBA Low, LBA Mid, LBA High, Device.
SIGNATURE = (0x01, 0x01, 0x00, 0x00, 0x00)

READY = Status.DRDY | Status.DSC  # an idle drive that has settled on a track
READY_ERROR = Status.DRDY | Status.ERR   # a command ended in error (DSC clear, as QEMU has it)
BUSY_IN_RESET = Status.BSY | READY       # while SRST is held (other bits invalid while BSY)
OUT_OF_RANGE = Error.ABRT    # ATA-6 allows ABRT or IDNF for an LBA beyond the media

MAX_MULTIPLE = 16            # sectors per DRQ block in READ/WRITE MULTIPLE (IDENTIFY word 47)


class Command(IntEnum):
    READ_SECTORS = 0x20
    READ_SECTORS_NO_RETRY = 0x21
    WRITE_SECTORS = 0x30
    WRITE_SECTORS_NO_RETRY = 0x31
    READ_VERIFY_SECTORS = 0x40
    READ_VERIFY_SECTORS_NO_RETRY = 0x41
    EXECUTE_DEVICE_DIAGNOSTIC = 0x90
    INITIALIZE_DEVICE_PARAMETERS = 0x91
    READ_MULTIPLE = 0xC4
    WRITE_MULTIPLE = 0xC5
    SET_MULTIPLE_MODE = 0xC6
    FLUSH_CACHE = 0xE7
    IDENTIFY_DEVICE = 0xEC
    SET_FEATURES = 0xEF


SET_TRANSFER_MODE = 0x03     # SET FEATURES subcommand; the mode is in Sector Count
PIO_DEFAULT_MODES = (0x00, 0x01)             # PIO default mode, with IORDY disabled
PIO_FLOW_CONTROL_MODES = range(0x08, 0x0D)   # 00001nnn: PIO flow control modes 0-4


# --- the backing store ----------------------------------------------------------------------


class DiskImage:
    """A raw image file: sector n at byte offset 512 * n, written through on every sector."""

    def __init__(self, fd: int, sectors: int, name: str = "") -> None:
        self._fd = fd
        self.sectors = sectors
        self.name = name
        self._closer = weakref.finalize(self, os.close, fd)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> DiskImage:
        """Open an image for reading and writing; BadInput (one line) if it cannot be a disk."""
        name = os.fspath(path)
        try:
            fd = os.open(name, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise BadInput(f"{name}: no such file") from None
        except IsADirectoryError:
            raise BadInput(f"{name}: is a directory, not a disk image") from None
        except PermissionError:
            raise BadInput(f"{name}: cannot open the disk image for reading and writing "
                           "(permission denied)") from None
        except OSError as error:
            raise BadInput(f"{name}: cannot open the disk image: {error.strerror}") from None
        try:
            size = os.lseek(fd, 0, os.SEEK_END)   # also right for block devices (st_size 0)
        except OSError as error:
            os.close(fd)
            raise BadInput(f"{name}: not usable as a disk image: {error.strerror}") from None
        problem = None
        if size == 0:
            problem = "the disk image is empty"
        elif size % SECTOR_SIZE:
            problem = f"the disk image size ({size} bytes) is not a multiple of {SECTOR_SIZE}"
        elif size // SECTOR_SIZE > LBA28_MAX_SECTORS:
            problem = (f"the disk image has {size // SECTOR_SIZE} sectors; LBA28 reaches at most "
                       f"{LBA28_MAX_SECTORS}")
        if problem is not None:
            os.close(fd)
            raise BadInput(f"{name}: {problem}")
        return cls(fd, size // SECTOR_SIZE, name)

    def read(self, lba: int) -> bytes:
        data = os.pread(self._fd, SECTOR_SIZE, lba * SECTOR_SIZE)
        return data.ljust(SECTOR_SIZE, b"\0")   # the file shrank under us: reads as zeros

    def write(self, lba: int, data: bytes) -> None:
        view = memoryview(data)
        offset = lba * SECTOR_SIZE
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written

    def flush(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        self._closer()

    @property
    def closed(self) -> bool:
        return not self._closer.alive


# --- IDENTIFY DEVICE ------------------------------------------------------------------------


def ata_string(text: str, length: int) -> bytes:
    """An IDENTIFY string field: ASCII, space padded, the first character of each pair in the
    word's high byte ("ATA string convention") -- stored little-endian, so pairs swap."""
    raw = text.encode("ascii").ljust(length)[:length]
    return bytes(raw[i ^ 1] for i in range(length))


def default_geometry(sectors: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) of the default CHS translation, IDENTIFY words
    1, 3 and 6: 16 heads of 63 sectors and as many whole cylinders as fit, at most 16383 (the
    values ATA-6 has larger devices report); tiny images get fewer heads, then sectors."""
    per_track = min(63, sectors)
    heads = max(1, min(16, sectors // per_track))
    cylinders = max(1, min(16383, sectors // (heads * per_track)))
    return cylinders, heads, per_track


class AtaDisk:
    """Device 0 of an ATA channel. `io_read`/`io_write` serve the command block (8 ports),
    `control` the control block (Alternate Status / Device Control, 1 port)."""

    def __init__(self, image: DiskImage, irq: IrqLine, model: str = "vtemu ATA disk",
                 serial: str = "VTEMU00000001", firmware: str = "1.0") -> None:
        self.image = image
        self.capacity = image.sectors
        self._irq = irq
        self._model = model
        self._serial = serial
        self._firmware = firmware
        self.control = _ControlBlock(self)
        self._irq_level = False
        self.interrupts = 0                 # INTRQ assertions, for statistics
        self._power_on()

    # --- state ------------------------------------------------------------------------------
    def _power_on(self) -> None:
        self._features = 0
        self._nien = False
        self._srst = False
        self._pending = False
        self._cylinders, self._heads, self._per_track = default_geometry(self.capacity)
        self._chs_valid = True
        self._multiple = 0                  # READ/WRITE MULTIPLE disabled
        self._reset_registers()

    def _reset_registers(self) -> None:
        """The end of a reset or diagnostic: signature loaded, the device ready."""
        (self._count, self._lba_low, self._lba_mid, self._lba_high, self._device) = SIGNATURE
        self._error = DIAGNOSTIC_PASSED
        self._status = READY
        self._end_transfer()

    def _end_transfer(self) -> None:
        self._buffer = bytearray()
        self._position = 0
        self._writing = False
        self._remaining = 0                 # sectors of the command not yet transferred
        self._block = 1                     # sectors per DRQ block
        self._lba = 0                       # the next sector between media and buffer

    @property
    def status(self) -> Status:
        return Status(self._status)

    @property
    def interrupt_pending(self) -> bool:
        return self._pending

    @property
    def _selected(self) -> bool:
        return not self._device & DEVICE_DEV

    # --- INTRQ --------------------------------------------------------------------------------
    def _interrupt(self) -> None:
        self._pending = True
        self._update_irq()

    def _clear_interrupt(self) -> None:
        self._pending = False
        self._update_irq()

    def _update_irq(self) -> None:
        level = self._pending and not self._nien and self._selected
        if level != self._irq_level:
            self._irq_level = level
            self.interrupts += level
            self._irq.set_level(level)

    # --- command block ----------------------------------------------------------------------
    def io_read(self, offset: int, size: int) -> int:
        if offset == DATA:
            return self._read_data(size)
        return sum(self._read_register(offset + i) << (8 * i) for i in range(size))

    def io_write(self, offset: int, size: int, value: int) -> None:
        if offset == DATA:
            self._write_data(size, value)
            return
        for i in range(size):
            self._write_register(offset + i, (value >> (8 * i)) & 0xFF)

    def _read_register(self, offset: int) -> int:
        if offset == STATUS_COMMAND:
            if not self._selected:
                return 0x00
            self._clear_interrupt()         # reading Status acknowledges the interrupt
            return self._status
        return {ERROR_FEATURES: self._error, SECTOR_COUNT: self._count, LBA_LOW: self._lba_low,
                LBA_MID: self._lba_mid, LBA_HIGH: self._lba_high,
                DEVICE: self._device}.get(offset, 0xFF)

    def _write_register(self, offset: int, value: int) -> None:
        if self._srst or offset >= COMMAND_BLOCK_SIZE:
            return                          # BSY: the device ignores the command block
        if offset == ERROR_FEATURES:
            self._features = value
        elif offset == SECTOR_COUNT:
            self._count = value
        elif offset == LBA_LOW:
            self._lba_low = value
        elif offset == LBA_MID:
            self._lba_mid = value
        elif offset == LBA_HIGH:
            self._lba_high = value
        elif offset == DEVICE:
            self._device = value
            self._update_irq()
        elif self._selected or value == Command.EXECUTE_DEVICE_DIAGNOSTIC:
            self._command(value)

    # --- control block ----------------------------------------------------------------------
    def read_alternate_status(self) -> int:
        return self._status if self._selected else 0x00

    def write_device_control(self, value: int) -> None:
        srst = bool(value & DeviceControl.SRST)
        self._nien = bool(value & DeviceControl.NIEN)
        if srst and not self._srst:
            # "Software reset protocol": the device is busy from SRST set until SRST clear.
            self._srst = True
            self._pending = False
            self._end_transfer()
            self._status = BUSY_IN_RESET
        elif self._srst and not srst:
            self._srst = False
            self._reset_registers()         # no interrupt follows a software reset
        self._update_irq()

    # --- data register ----------------------------------------------------------------------
    def _read_data(self, size: int) -> int:
        if size == 4:
            low = self._read_data(2)
            return low | self._read_data(2) << 16
        if self._writing or self._position >= len(self._buffer):
            return NO_DATA
        word = self._buffer[self._position] | self._buffer[self._position + 1] << 8
        self._position += 2
        if self._position == len(self._buffer):
            self._block_read()
        return word & ((1 << (8 * size)) - 1)

    def _write_data(self, size: int, value: int) -> None:
        if size == 4:
            self._write_data(2, value & 0xFFFF)
            self._write_data(2, value >> 16)
            return
        if not self._writing or self._position >= len(self._buffer):
            return
        value &= 0xFF if size == 1 else 0xFFFF
        self._buffer[self._position] = value & 0xFF
        self._buffer[self._position + 1] = value >> 8
        self._position += 2
        if self._position == len(self._buffer):
            self._block_written()

    # Optional bulk form of string I/O (REP INSW/OUTSW): the same as `count` single accesses
    # in order, without a Python call per element. vtemu's string-I/O path does not use it yet.
    def io_read_string(self, offset: int, size: int, count: int) -> bytes:
        """What `count` reads of `size` bytes at `offset` return, little-endian, concatenated."""
        if offset != DATA or size == 1:
            return b"".join(self.io_read(offset, size).to_bytes(size, "little")
                            for _ in range(count))
        words = count * size // 2
        out = bytearray()
        while words:
            available = (len(self._buffer) - self._position) // 2
            if self._writing or not available:
                out += NO_DATA.to_bytes(2, "little") * words
                break
            take = min(words, available)
            out += self._buffer[self._position:self._position + 2 * take]
            self._position += 2 * take
            words -= take
            if self._position == len(self._buffer):
                self._block_read()
        return bytes(out)

    def io_write_string(self, offset: int, size: int, data: bytes) -> None:
        """`len(data) // size` writes of `size` bytes at `offset`, the values taken in order."""
        if offset != DATA or size == 1:
            for i in range(0, len(data) - size + 1, size):
                self.io_write(offset, size, int.from_bytes(data[i:i + size], "little"))
            return
        view = memoryview(data)[:len(data) // size * size]
        while view:
            if not self._writing or self._position >= len(self._buffer):
                return
            take = min(len(view), len(self._buffer) - self._position)
            self._buffer[self._position:self._position + take] = view[:take]
            self._position += take
            view = view[take:]
            if self._position == len(self._buffer):
                self._block_written()

    # --- commands -----------------------------------------------------------------------------
    def _command(self, code: int) -> None:
        self._clear_interrupt()
        self._end_transfer()
        self._error = 0
        self._status = READY
        if code in (Command.READ_SECTORS, Command.READ_SECTORS_NO_RETRY):
            self._start_transfer(writing=False, block=1)
        elif code in (Command.WRITE_SECTORS, Command.WRITE_SECTORS_NO_RETRY):
            self._start_transfer(writing=True, block=1)
        elif code in (Command.READ_MULTIPLE, Command.WRITE_MULTIPLE):
            if not self._multiple:
                self._abort()               # multiple mode is disabled
            else:
                self._start_transfer(writing=code == Command.WRITE_MULTIPLE, block=self._multiple)
        elif code in (Command.READ_VERIFY_SECTORS, Command.READ_VERIFY_SECTORS_NO_RETRY):
            self._verify()
        elif code == Command.IDENTIFY_DEVICE:
            self._buffer = bytearray(self.identify_block())
            self._status = READY | Status.DRQ
            self._interrupt()
        elif code == Command.SET_MULTIPLE_MODE:
            self._set_multiple_mode(self._count)
        elif code == Command.SET_FEATURES:
            self._set_features(self._features, self._count)
        elif code == Command.INITIALIZE_DEVICE_PARAMETERS:
            self._initialize_device_parameters()
        elif code == Command.EXECUTE_DEVICE_DIAGNOSTIC:
            self._reset_registers()
            self._interrupt()
        elif code == Command.FLUSH_CACHE:
            self.image.flush()
            self._interrupt()
        else:
            self._abort()

    def _abort(self, error: Error = Error.ABRT) -> None:
        """End the command in error: ERR with the Error register set, and an interrupt."""
        self._end_transfer()
        self._error = int(error)
        self._status = READY_ERROR
        self._interrupt()

    def _sector_count(self) -> int:
        return self._count or 256           # a count of 0 asks for 256 sectors

    def _start_transfer(self, writing: bool, block: int) -> None:
        lba = self._address()
        if lba is None:
            self._abort(Error.IDNF)         # a CHS address outside the translation
            return
        self._writing = writing
        self._remaining = self._sector_count()
        self._block = block
        self._lba = lba
        if writing:
            self._request_block(first=True)
        else:
            self._read_block()

    def _next_sectors(self) -> int | None:
        """Sectors in the next DRQ block, or None after ending the command in error because
        the block reaches beyond the media (the address registers name the first sector
        outside it; the count, the sectors not transferred)."""
        sectors = min(self._block, self._remaining)
        if self._lba + sectors <= self.capacity:
            return sectors
        self._set_address(max(self._lba, self.capacity))
        self._count = self._remaining & 0xFF
        self._abort(OUT_OF_RANGE)
        return None

    def _read_block(self) -> None:
        """Data-in: the next block from the media into the buffer, then DRQ and INTRQ."""
        sectors = self._next_sectors()
        if sectors is None:
            return
        self._buffer = bytearray(b"".join(self.image.read(self._lba + i)
                                          for i in range(sectors)))
        self._position = 0
        self._moved(sectors)
        self._status = READY | Status.DRQ
        self._interrupt()

    def _request_block(self, first: bool = False) -> None:
        """Data-out: DRQ for the next block; INTRQ too unless it is the command's first."""
        sectors = self._next_sectors()
        if sectors is None:
            return
        self._buffer = bytearray(sectors * SECTOR_SIZE)
        self._position = 0
        self._status = READY | Status.DRQ
        if not first:
            self._interrupt()

    def _block_read(self) -> None:
        """The host has taken the whole buffer."""
        if self._remaining:
            self._read_block()
        else:                               # data-in ends without an interrupt
            self._end_transfer()
            self._status = READY

    def _block_written(self) -> None:
        """The host has filled the buffer: it goes to the media, sector by sector."""
        sectors = len(self._buffer) // SECTOR_SIZE
        for i in range(sectors):
            self.image.write(self._lba + i,
                             bytes(self._buffer[i * SECTOR_SIZE:(i + 1) * SECTOR_SIZE]))
        self._moved(sectors)
        if self._remaining:
            self._request_block()
        else:
            self._end_transfer()
            self._status = READY
            self._interrupt()               # data-out interrupts after the last block too

    def _moved(self, sectors: int) -> None:
        """`sectors` went between media and buffer: the task file counts them done."""
        self._lba += sectors
        self._remaining -= sectors
        self._count = self._remaining & 0xFF
        self._set_address(self._lba)

    def _verify(self) -> None:
        lba = self._address()
        if lba is None:
            self._abort(Error.IDNF)
            return
        count = self._sector_count()
        if lba + count > self.capacity:
            verified = max(0, self.capacity - lba)
            self._set_address(lba + verified)
            self._count = (count - verified) & 0xFF
            self._abort(OUT_OF_RANGE)
            return
        self._set_address(lba + count)
        self._count = 0
        self._interrupt()

    def _set_multiple_mode(self, count: int) -> None:
        if count == 0:
            self._multiple = 0              # ACS: a count of 0 disables multiple mode
        elif count <= MAX_MULTIPLE and count & (count - 1) == 0:
            self._multiple = count
        else:
            self._abort()
            return
        self._interrupt()

    def _set_features(self, subcommand: int, value: int) -> None:
        if subcommand == SET_TRANSFER_MODE and (value in PIO_DEFAULT_MODES
                                                or value in PIO_FLOW_CONTROL_MODES):
            self._interrupt()               # the model is untimed: any PIO mode will do
        else:
            self._abort()                   # DMA modes and other subcommands are unsupported

    def _initialize_device_parameters(self) -> None:
        """Sectors per track from Sector Count, heads from Device bits 3:0 (+1). A translation
        with no sectors leaves CHS media accesses failing with IDNF until a valid one is set."""
        per_track, heads = self._count, (self._device & DEVICE_HEAD) + 1
        self._chs_valid = per_track != 0
        if self._chs_valid:
            self._per_track, self._heads = per_track, heads
            self._cylinders = min(0xFFFF, self.capacity // (heads * per_track))
        self._interrupt()

    # --- addresses ----------------------------------------------------------------------------
    def _address(self) -> int | None:
        """The LBA the command block registers name, or None for an invalid CHS address."""
        if self._device & DEVICE_LBA:
            return ((self._device & DEVICE_HEAD) << 24 | self._lba_high << 16
                    | self._lba_mid << 8 | self._lba_low)
        cylinder = self._lba_high << 8 | self._lba_mid
        head, sector = self._device & DEVICE_HEAD, self._lba_low
        if (not self._chs_valid or not 1 <= sector <= self._per_track or head >= self._heads
                or cylinder >= self._cylinders):
            return None
        return (cylinder * self._heads + head) * self._per_track + sector - 1

    def _set_address(self, lba: int) -> None:
        if self._device & DEVICE_LBA or not self._chs_valid:
            self._lba_low, self._lba_mid, self._lba_high = (lba & 0xFF, lba >> 8 & 0xFF,
                                                            lba >> 16 & 0xFF)
            if self._device & DEVICE_LBA:
                self._device = (self._device & ~DEVICE_HEAD) | (lba >> 24 & DEVICE_HEAD)
            return
        track, sector = divmod(lba, self._per_track)
        cylinder, head = divmod(track, self._heads)
        self._lba_low = sector + 1
        self._lba_mid, self._lba_high = cylinder & 0xFF, cylinder >> 8 & 0xFF
        self._device = (self._device & ~DEVICE_HEAD) | head

    # --- IDENTIFY DEVICE ----------------------------------------------------------------------
    def identify_block(self) -> bytes:
        """The 256 words IDENTIFY DEVICE returns (ATA-6 "IDENTIFY DEVICE" data), with the
        integrity word."""
        words = [0] * WORDS_PER_SECTOR
        cylinders, heads, per_track = default_geometry(self.capacity)
        words[0] = 0x0040                     # ATA device, not removable (bit 6, obsolete)
        words[1] = cylinders                  # default CHS translation
        words[2] = 0xC837                     # no spin-up SET FEATURES; response complete
        words[3] = heads
        words[6] = per_track
        words[47] = 0x8000 | MAX_MULTIPLE     # READ/WRITE MULTIPLE: up to 16 sectors a block
        words[49] = 0x0A00                    # IORDY supported (bit 11), LBA supported (bit 9)
        words[50] = 0x4000                    # bit 14 shall be one
        words[53] = 0x0003                    # words 64-70 and 54-58 are valid
        if self._chs_valid:                   # the current CHS translation
            current = self._cylinders * self._heads * self._per_track
            words[54:59] = [self._cylinders, self._heads, self._per_track,
                            current & 0xFFFF, current >> 16]
        if self._multiple:
            words[59] = 0x0100 | self._multiple   # multiple sector setting is valid
        words[60] = self.capacity & 0xFFFF    # total user-addressable sectors (LBA28)
        words[61] = self.capacity >> 16
        words[64] = 0x0003                    # PIO modes 3 and 4 supported
        words[67] = 120                       # minimum PIO cycle time without flow control (ns)
        words[68] = 120                       # ... with IORDY flow control (ns)
        words[80] = 0x0070                    # major version: ATA/ATAPI-4, -5 and -6
        words[83] = 0x5000                    # bit 14 shall be one; FLUSH CACHE supported
        words[84] = 0x4000                    # bit 14 shall be one
        words[86] = 0x1000                    # FLUSH CACHE enabled
        words[87] = 0x4000                    # bit 14 shall be one
        # Hardware reset result, device 0: bit 14 (valid) and bit 0 set, number chosen by
        # jumper (bits 2:1 = 01), diagnostics passed (bit 3), device 0 answers for device 1
        # (bit 6); no PDIAG-/DASP- from a device 1.
        words[93] = 0x4000 | 0x0040 | 0x0008 | 0x0002 | 0x0001
        block = bytearray(struct.pack(f"<{WORDS_PER_SECTOR}H", *words))
        block[20:40] = ata_string(self._serial, 20)      # words 10-19
        block[46:54] = ata_string(self._firmware, 8)     # words 23-26
        block[54:94] = ata_string(self._model, 40)       # words 27-46
        # Word 255, "Integrity word": A5h in bits 7:0 and a checksum in bits 15:8 that makes
        # the 512 bytes sum to 0 modulo 256.
        block[510] = 0xA5
        block[511] = -sum(block[:511]) & 0xFF
        return bytes(block)

    def close(self) -> None:
        self.image.close()


class _ControlBlock:
    """The control block register at 3F6h: Alternate Status when read (the status without
    acknowledging an interrupt), Device Control (nIEN, SRST, HOB) when written."""

    def __init__(self, disk: AtaDisk) -> None:
        self._disk = disk

    def io_read(self, offset: int, size: int) -> int:
        return self._disk.read_alternate_status()

    def io_write(self, offset: int, size: int, value: int) -> None:
        self._disk.write_device_control(value & 0xFF)


def open_disk(path: str | os.PathLike[str] | Path, irq: IrqLine) -> AtaDisk:
    """The primary master backed by the image at `path` (BadInput if it cannot be used)."""
    return AtaDisk(DiskImage.open(path), irq)
