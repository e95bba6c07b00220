"""The device side of the machine: a two-method device protocol, buses that reject overlaps,
and the wires (IRQ lines) between devices and the interrupt controller.

Devices see offsets from their base, never absolute ports or addresses, so the same device
class can sit anywhere the layout module puts it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Protocol


class PortDevice(Protocol):
    def io_read(self, offset: int, size: int) -> int: ...
    def io_write(self, offset: int, size: int, value: int) -> None: ...


class MmioDevice(Protocol):
    def mmio_read(self, offset: int, size: int) -> int: ...
    def mmio_write(self, offset: int, size: int, value: int) -> None: ...


class IrqLine(Protocol):
    """One interrupt request wire. Edge-triggered receivers latch on a rising edge."""

    def set_level(self, level: bool) -> None: ...


def pulse(line: IrqLine) -> None:
    """A rising then falling edge: how an ISA device signals an edge-triggered interrupt."""
    line.set_level(True)
    line.set_level(False)


class InterruptController(Protocol):
    """What the vCPU sees of the PIC: the INTR pin and the INTA cycle."""

    def intr_asserted(self) -> bool: ...
    def acknowledge(self) -> int: ...


class BusConflict(ValueError):
    """Two devices claimed overlapping ports or addresses."""


@dataclass(frozen=True)
class Attachment:
    name: str
    base: int
    size: int
    device: object
    byte_wide: bool = False


ALL_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}


class PortBus:
    """The 64 KiB I/O port space. Unclaimed ports read as all ones and drop writes, as on a PC."""

    def __init__(self) -> None:
        self._by_port: dict[int, Attachment] = {}
        self.attachments: list[Attachment] = []
        self.unclaimed_accesses: Counter[int] = Counter()

    def attach(self, name: str, base: int, size: int, device: PortDevice,
               byte_wide: bool = True) -> None:
        """byte_wide: an 8-bit ISA device; a 16/32-bit access to it becomes consecutive byte
        accesses to port, port+1, ... as the ISA bus splits them (each routed on its own)."""
        if size <= 0 or base < 0 or base + size > 0x10000:
            raise BusConflict(f"{name}: port range {base:#x}+{size} is outside the I/O space")
        for port in range(base, base + size):
            if port in self._by_port:
                other = self._by_port[port]
                raise BusConflict(f"{name}: port {port:#x} already belongs to {other.name}")
        attachment = Attachment(name, base, size, device, byte_wide)
        for port in range(base, base + size):
            self._by_port[port] = attachment
        self.attachments.append(attachment)

    def owner(self, port: int) -> Attachment | None:
        return self._by_port.get(port)

    def read(self, port: int, size: int) -> int:
        attachment = self._by_port.get(port)
        if attachment is None:
            self.unclaimed_accesses[port] += 1
            return ALL_ONES[size]
        if size > 1 and attachment.byte_wide:
            return sum(self.read((port + i) & 0xFFFF, 1) << (8 * i) for i in range(size))
        return attachment.device.io_read(port - attachment.base, size)  # type: ignore[attr-defined]

    def write(self, port: int, size: int, value: int) -> None:
        attachment = self._by_port.get(port)
        if attachment is None:
            self.unclaimed_accesses[port] += 1
            return
        if size > 1 and attachment.byte_wide:
            for i in range(size):
                self.write((port + i) & 0xFFFF, 1, (value >> (8 * i)) & 0xFF)
            return
        attachment.device.io_write(port - attachment.base, size, value)  # type: ignore[attr-defined]


    def read_string(self, port: int, size: int, count: int) -> bytes:
        """`count` reads of `size` bytes (INS), little-endian and concatenated. A device that
        moves blocks (a disk's data port) may offer io_read_string; it must behave exactly
        like the same number of single reads."""
        attachment = self._by_port.get(port)
        bulk = getattr(attachment.device, "io_read_string", None) if attachment else None
        if bulk is None or (size > 1 and attachment.byte_wide):  # type: ignore[union-attr]
            return b"".join(self.read(port, size).to_bytes(size, "little") for _ in range(count))
        return bulk(port - attachment.base, size, count)  # type: ignore[union-attr]

    def write_string(self, port: int, size: int, data: bytes) -> None:
        """`len(data) // size` writes of `size` bytes (OUTS), in order; io_write_string likewise."""
        attachment = self._by_port.get(port)
        bulk = getattr(attachment.device, "io_write_string", None) if attachment else None
        if bulk is None or (size > 1 and attachment.byte_wide):  # type: ignore[union-attr]
            for offset in range(0, len(data), size):
                self.write(port, size, int.from_bytes(data[offset:offset + size], "little"))
            return
        bulk(port - attachment.base, size, data)  # type: ignore[union-attr]


class MmioBus:
    """Guest-physical MMIO ranges, reached through EPT violations on pages EPT leaves unmapped."""

    def __init__(self) -> None:
        self.attachments: list[Attachment] = []

    def attach(self, name: str, base: int, size: int, device: MmioDevice) -> None:
        for other in self.attachments:
            if base < other.base + other.size and other.base < base + size:
                raise BusConflict(f"{name}: range {base:#x}+{size:#x} overlaps {other.name}")
        self.attachments.append(Attachment(name, base, size, device))

    def find(self, gpa: int) -> Attachment | None:
        for attachment in self.attachments:
            if attachment.base <= gpa < attachment.base + attachment.size:
                return attachment
        return None

    def read(self, gpa: int, size: int) -> int | None:
        """The value read, or None where no device claims the address."""
        attachment = self.find(gpa)
        if attachment is None:
            return None
        return attachment.device.mmio_read(gpa - attachment.base, size)  # type: ignore[attr-defined]

    def write(self, gpa: int, size: int, value: int) -> bool:
        """True if a device took the write."""
        attachment = self.find(gpa)
        if attachment is None:
            return False
        attachment.device.mmio_write(gpa - attachment.base, size, value)  # type: ignore[attr-defined]
        return True
