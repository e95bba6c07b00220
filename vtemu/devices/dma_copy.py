"""A bus-mastering copy engine: vtemu's own minimal DMA device (no datasheet; this is it).

Registers, 32-bit, at I/O ports COPY_ENGINE_BASE + offset:
  00h SRC_LO   04h SRC_HI     source bus address (the guest's physical address)
  08h DST_LO   0Ch DST_HI     destination bus address
  10h LENGTH                  bytes to copy (at most MAX_LENGTH)
  14h DOORBELL                write 1: start the copy described above
  18h STATUS                  bit 0 busy, bit 1 done, bit 2 error; write 1s to clear bits 1-2
  1Ch CONTROL                 bit 0: raise the completion interrupt (IRQ line, edge)
  20h FAULT_ADDR_LO  24h FAULT_ADDR_HI   the bus address of the first refused access
  28h FAULT_INFO              bits 7:0 the remapping fault reason, bit 8 the access was a write
  2Ch COPIES                  completed copies (read-only)
Every access the engine makes goes through its bus master port, which the hypervisor backs
with DMA remapping (hv/iommu.py). The engine translates every page of both buffers before
moving a byte, so a refused access aborts the whole copy with nothing written; the copy
itself completes within the doorbell write (a real engine would take time: the guest must
still wait for DONE or the interrupt, which are set before the write returns).
"""

from __future__ import annotations

from typing import Protocol

from vtemu.devices.bus import IrqLine, pulse

SRC_LO, SRC_HI, DST_LO, DST_HI, LENGTH, DOORBELL, STATUS, CONTROL = range(0, 0x20, 4)
FAULT_ADDR_LO, FAULT_ADDR_HI, FAULT_INFO, COPIES = range(0x20, 0x30, 4)
REGISTER_SPACE = 0x30
STATUS_BUSY, STATUS_DONE, STATUS_ERROR = 1, 2, 4
CONTROL_IRQ = 1
FAULT_WRITE = 1 << 8
MAX_LENGTH = 1 << 20


class DmaRefused(Exception):
    """The bus master port refused an access (a remapping fault)."""

    def __init__(self, address: int, write: bool, reason: int) -> None:
        super().__init__(f"DMA {'write' if write else 'read'} of {address:#x} refused ({reason:#x})")
        self.address = address
        self.write = write
        self.reason = reason


class BusMaster(Protocol):
    """What the device may do on the bus: check, read and write whole buffers."""

    def check(self, address: int, length: int, write: bool) -> None: ...
    def read(self, address: int, length: int) -> bytes: ...
    def write(self, address: int, data: bytes) -> None: ...


class CopyEngine:
    def __init__(self, port: BusMaster, irq: IrqLine) -> None:
        self.port = port
        self.irq = irq
        self.registers = {offset: 0 for offset in range(0, REGISTER_SPACE, 4)}
        self.bytes_copied = 0

    def io_read(self, offset: int, size: int) -> int:
        value = self.registers.get(offset & ~3, 0) >> (8 * (offset & 3))
        return value & ((1 << (8 * size)) - 1)

    def io_write(self, offset: int, size: int, value: int) -> None:
        if size != 4 or offset & 3 or offset not in self.registers:
            return   # the engine decodes only aligned 32-bit accesses
        if offset == DOORBELL:
            if value & 1:
                self._start()
        elif offset == STATUS:
            self.registers[STATUS] &= ~(value & (STATUS_DONE | STATUS_ERROR))
        elif offset in (SRC_LO, SRC_HI, DST_LO, DST_HI, LENGTH, CONTROL):
            self.registers[offset] = value & 0xFFFFFFFF

    def _address(self, low: int, high: int) -> int:
        return self.registers[low] | (self.registers[high] << 32)

    def _start(self) -> None:
        if self.registers[STATUS] & STATUS_BUSY:
            return
        source = self._address(SRC_LO, SRC_HI)
        destination = self._address(DST_LO, DST_HI)
        length = min(self.registers[LENGTH], MAX_LENGTH)
        try:
            self.port.check(source, length, write=False)
            self.port.check(destination, length, write=True)
        except DmaRefused as refused:
            self._finish(STATUS_ERROR, refused)
            return
        self.port.write(destination, self.port.read(source, length))
        self.bytes_copied += length
        self.registers[COPIES] += 1
        self._finish(STATUS_DONE, None)

    def _finish(self, status: int, refused: DmaRefused | None) -> None:
        if refused is not None:
            self.registers[FAULT_ADDR_LO] = refused.address & 0xFFFFFFFF
            self.registers[FAULT_ADDR_HI] = refused.address >> 32
            self.registers[FAULT_INFO] = (refused.reason & 0xFF) | (FAULT_WRITE if refused.write else 0)
        self.registers[STATUS] = (self.registers[STATUS] & ~STATUS_BUSY) | status
        if self.registers[CONTROL] & CONTROL_IRQ:
            pulse(self.irq)
