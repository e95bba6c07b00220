"""Intel 8259A programmable interrupt controller (Intel 8259A datasheet, order 231468).

Two chips as on the PC/AT: the master at 20h/21h drives the CPU's INTR pin, the slave at
A0h/A1h drives the master's IR2. Section names in comments refer to the datasheet.

Edge-triggered inputs latch IRR on the rising edge and keep it after the line falls, as QEMU
models them: ISA devices signal with a pulse (bus.pulse), and the datasheet's "IR must stay
high until the first INTA" rule would turn every pulse into a spurious IRQ 7. A request still
"vanishes before INTA" -- and the INTA cycle returns the spurious IR7 vector -- when a
level-triggered line falls, when the guest masks the request, or when a slave's request
goes away after the master latched the slave's INT on IR2 (spurious IRQ 15).
"""

from __future__ import annotations

from enum import Enum
from typing import Callable

from vtemu.devices.bus import IrqLine

# ICW1 (offset 0, bit 4 set), "Initialization Command Words".
ICW1_IC4 = 0x01          # ICW4 follows
ICW1_SNGL = 0x02         # single chip: no ICW3
ICW1_LTIM = 0x08         # level-triggered inputs
ICW1_SELECT = 0x10
# ICW4
ICW4_UPM = 0x01          # 8086/8088 mode (the only INTA protocol an x86 CPU runs)
ICW4_AEOI = 0x02
ICW4_SFNM = 0x10
# OCW3 (offset 0, bits 4:3 = 01), "Operation Command Words".
OCW3_SELECT = 0x08
OCW3_RIS = 0x01
OCW3_RR = 0x02
OCW3_POLL = 0x04
OCW3_SMM = 0x20
OCW3_ESMM = 0x40
# OCW2 commands: bits 7:5 = R, SL, EOI.
OCW2_ROTATE_AEOI_CLEAR = 0b000
OCW2_NONSPECIFIC_EOI = 0b001
OCW2_NOP = 0b010
OCW2_SPECIFIC_EOI = 0b011
OCW2_ROTATE_AEOI_SET = 0b100
OCW2_ROTATE_NONSPECIFIC_EOI = 0b101
OCW2_SET_PRIORITY = 0b110
OCW2_ROTATE_SPECIFIC_EOI = 0b111

POLL_INTERRUPT = 0x80    # poll word bit 7: a request was found
SPURIOUS_IR = 7          # "DEFAULT IR7" when no request survives to INTA
CASCADE_IR = 2           # the PC/AT slave hangs on master IR2
UNDRIVEN_BUS = 0xFF      # INTA with no slave answering the cascade address: the bus floats high


class _InitStep(Enum):
    READY = 0
    ICW2 = 2
    ICW3 = 3
    ICW4 = 4


class _Input:
    """One IR pin as an IrqLine."""

    def __init__(self, chip: Pic8259, ir: int) -> None:
        self._chip = chip
        self._ir = ir

    def set_level(self, level: bool) -> None:
        self._chip.set_input(self._ir, level)


class Pic8259:
    """One 8259A in 8086 mode. `is_master` is the SP/EN pin: it decides how ICW3 reads."""

    def __init__(self, is_master: bool = True,
                 on_intr_change: Callable[[bool], None] | None = None) -> None:
        self.is_master = is_master
        self._on_intr_change = on_intr_change
        self.irr = 0
        self.isr = 0
        self.imr = 0
        self._levels = 0               # current IR pin levels
        self._lowest = 7               # the IR with the lowest priority (rotation state)
        self.vector_base = 0
        self.level_triggered = False
        self.single = False
        self._needs_icw4 = False
        self._init_step = _InitStep.READY
        self.cascade_mask = 0          # master ICW3: IRs with a slave attached
        self.slave_id = 7              # slave ICW3: the cascade address it answers
        self.x86_mode = False
        self.auto_eoi = False
        self.rotate_on_auto_eoi = False
        self.special_fully_nested = False
        self.special_mask = False
        self._read_isr = False
        self._poll = False
        self._intr = False

    # --- wires -------------------------------------------------------------------------------
    def irq_line(self, ir: int) -> IrqLine:
        return _Input(self, ir)

    def set_input(self, ir: int, level: bool) -> None:
        bit = 1 << ir
        rising = level and not self._levels & bit
        self._levels = (self._levels | bit) if level else (self._levels & ~bit)
        if self.level_triggered:
            # Level mode: IRR follows the pin ("Edge and Level Triggered Modes").
            self.irr = (self.irr | bit) if level else (self.irr & ~bit)
        elif rising:
            self.irr |= bit
        self._update_intr()

    @property
    def intr(self) -> bool:
        """The INT output pin."""
        return self._intr

    # --- priority resolution ("Fully Nested Mode", "Special Mask Mode") ----------------------
    def _priority_order(self) -> list[int]:
        """IRs from highest to lowest priority under the current rotation."""
        return [(self._lowest + 1 + k) & 7 for k in range(8)]

    def _highest(self, bits: int) -> int | None:
        for ir in self._priority_order():
            if bits >> ir & 1:
                return ir
        return None

    def _in_service_blocking(self) -> int:
        """ISR bits that hold off requests of equal or lower priority.

        In special mask mode a masked in-service level no longer blocks anything, and a
        non-specific EOI skips it ("Special Mask Mode"; note under "End of Interrupt").
        """
        return self.isr & ~self.imr if self.special_mask else self.isr

    def _request_to_service(self) -> int | None:
        request = self._highest(self.irr & ~self.imr)
        if request is None:
            return None
        blocking = self._in_service_blocking()
        if self.is_master and self.special_fully_nested:
            # SFNM: a slave in service does not lock out its own, higher-priority requests.
            blocking &= ~self.cascade_mask
        in_service = self._highest(blocking)
        order = self._priority_order()
        if in_service is None or order.index(request) < order.index(in_service):
            return request
        return None

    def _update_intr(self) -> None:
        intr = self._request_to_service() is not None
        if intr != self._intr:
            self._intr = intr
            if self._on_intr_change is not None:
                self._on_intr_change(intr)

    # --- the INTA cycle ----------------------------------------------------------------------
    def interrupt_acknowledge(self) -> int | None:
        """The two INTA pulses on this chip: the IR acknowledged, or None for a default IR7.

        A spurious acknowledge sets no ISR bit ("Interrupt Sequence"), so it needs no EOI.
        """
        ir = self._request_to_service()
        if ir is None:
            return None
        bit = 1 << ir
        if not self.level_triggered:
            self.irr &= ~bit        # the edge latch is consumed; level mode IRR follows the pin
        if self.auto_eoi:
            # AEOI: the ISR bit is reset at the end of the second INTA pulse.
            if self.rotate_on_auto_eoi:
                self._lowest = ir
        else:
            self.isr |= bit
        self._update_intr()
        return ir

    def vector(self, ir: int) -> int:
        # In 8086 mode T7-T3 come from ICW2 and the low three bits are the IR number (ICW2).
        return self.vector_base | ir

    def has_slave_on(self, ir: int) -> bool:
        return not self.single and bool(self.cascade_mask >> ir & 1)

    # --- port I/O ----------------------------------------------------------------------------
    def io_read(self, offset: int, size: int) -> int:
        if self._poll:
            return self._read_poll_word()
        if offset == 0:
            return self.isr if self._read_isr else self.irr
        return self.imr

    def io_write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == 0:
            if value & ICW1_SELECT:
                self._write_icw1(value)
            elif value & OCW3_SELECT:
                self._write_ocw3(value)
            else:
                self._write_ocw2(value)
        elif self._init_step is _InitStep.READY:
            self.imr = value                                   # OCW1
            self._update_intr()
        else:
            self._write_icw234(value)

    def _read_poll_word(self) -> int:
        # "Poll Command": the next RD acts as an INTA and returns I...W2W1W0.
        self._poll = False
        ir = self.interrupt_acknowledge()
        return 0 if ir is None else POLL_INTERRUPT | ir

    # --- initialization ----------------------------------------------------------------------
    def _write_icw1(self, value: int) -> None:
        # ICW1 effects a-f ("Initialization Command Words"). ISR is also cleared, as QEMU does;
        # the datasheet leaves it unspecified.
        self.level_triggered = bool(value & ICW1_LTIM)
        self.single = bool(value & ICW1_SNGL)
        self._needs_icw4 = bool(value & ICW1_IC4)
        # a. The edge sense circuit is reset: an IR must make a new low-to-high transition.
        self.irr = self._levels if self.level_triggered else 0
        self.isr = 0
        self.imr = 0                                           # b.
        self._lowest = 7                                       # c. IR7 lowest priority
        self.slave_id = 7                                      # d.
        self.cascade_mask = 0
        self.special_mask = False                              # e.
        self._read_isr = False
        self._poll = False
        self.rotate_on_auto_eoi = False
        if not self._needs_icw4:                               # f. ICW4 functions zeroed
            self.x86_mode = self.auto_eoi = self.special_fully_nested = False
        self._init_step = _InitStep.ICW2
        self._update_intr()

    def _write_icw234(self, value: int) -> None:
        if self._init_step is _InitStep.ICW2:
            self.vector_base = value & 0xF8
            self._init_step = self._step_after_icw2()
        elif self._init_step is _InitStep.ICW3:
            if self.is_master:
                self.cascade_mask = value
            else:
                self.slave_id = value & 7
            self._init_step = _InitStep.ICW4 if self._needs_icw4 else _InitStep.READY
        else:
            # ICW4_UPM = 0 asks for the 8080 CALL sequence, which no x86 CPU runs: the mode is
            # recorded but every INTA still returns an 8086-style vector.
            self.x86_mode = bool(value & ICW4_UPM)
            self.auto_eoi = bool(value & ICW4_AEOI)
            self.special_fully_nested = bool(value & ICW4_SFNM)
            # BUF and M/S select the SP/EN pin's function; there is no bus buffer to drive.
            self._init_step = _InitStep.READY
        self._update_intr()

    def _step_after_icw2(self) -> _InitStep:
        if not self.single:
            return _InitStep.ICW3
        return _InitStep.ICW4 if self._needs_icw4 else _InitStep.READY

    @property
    def initialized(self) -> bool:
        return self._init_step is _InitStep.READY

    # --- operation command words -------------------------------------------------------------
    def _write_ocw2(self, value: int) -> None:
        command = value >> 5
        level = value & 7
        if command in (OCW2_NONSPECIFIC_EOI, OCW2_ROTATE_NONSPECIFIC_EOI):
            ir = self._highest(self._in_service_blocking())
            if ir is not None:
                self.isr &= ~(1 << ir)
                if command == OCW2_ROTATE_NONSPECIFIC_EOI:
                    self._lowest = ir
        elif command in (OCW2_SPECIFIC_EOI, OCW2_ROTATE_SPECIFIC_EOI):
            self.isr &= ~(1 << level)
            if command == OCW2_ROTATE_SPECIFIC_EOI:
                self._lowest = level
        elif command == OCW2_SET_PRIORITY:
            self._lowest = level
        elif command in (OCW2_ROTATE_AEOI_SET, OCW2_ROTATE_AEOI_CLEAR):
            self.rotate_on_auto_eoi = command == OCW2_ROTATE_AEOI_SET
        self._update_intr()

    def _write_ocw3(self, value: int) -> None:
        if value & OCW3_ESMM:
            self.special_mask = bool(value & OCW3_SMM)
        if value & OCW3_RR:
            self._read_isr = bool(value & OCW3_RIS)
        if value & OCW3_POLL:
            self._poll = True
        self._update_intr()

    @property
    def lowest_priority_ir(self) -> int:
        return self._lowest


class Pic8259Pair:
    """The PC/AT pair: master at 20h (drives INTR), slave at A0h cascaded on master IR2.

    IRQ n is master IR n for n < 8 and slave IR n-8 above. IRQ 2 has no line of its own: the
    slave's INT output drives master IR2 (the PC/AT reroutes the ISA IRQ2 pin to IRQ 9).
    """

    def __init__(self, on_intr_change: Callable[[bool], None] | None = None) -> None:
        self.master = Pic8259(is_master=True, on_intr_change=on_intr_change)
        self.slave = Pic8259(is_master=False, on_intr_change=self._slave_int_changed)
        self._lines: dict[int, IrqLine] = {}

    def _slave_int_changed(self, level: bool) -> None:
        self.master.set_input(CASCADE_IR, level)

    def irq_line(self, irq: int) -> IrqLine:
        if not 0 <= irq < 16:
            raise ValueError(f"IRQ {irq} does not exist on an 8259A pair (0-15)")
        if irq == CASCADE_IR:
            raise ValueError("IRQ 2 is the cascade input driven by the slave PIC; use IRQ 9")
        if irq not in self._lines:
            chip = self.master if irq < 8 else self.slave
            self._lines[irq] = chip.irq_line(irq & 7)
        return self._lines[irq]

    # --- InterruptController -----------------------------------------------------------------
    def intr_asserted(self) -> bool:
        return self.master.intr

    def acknowledge(self) -> int:
        """The INTA cycle as the CPU sees it; the vector comes over the cascade if needed."""
        ir = self.master.interrupt_acknowledge()
        if ir is None:
            return self.master.vector(SPURIOUS_IR)
        if not self.master.has_slave_on(ir):
            return self.master.vector(ir)
        if self.slave.slave_id != ir:
            return UNDRIVEN_BUS
        # The master has already put IR2 in service; a slave with nothing left to service
        # gives its IR7 vector (spurious IRQ 15) and the master still needs its EOI.
        slave_ir = self.slave.interrupt_acknowledge()
        return self.slave.vector(SPURIOUS_IR if slave_ir is None else slave_ir)
