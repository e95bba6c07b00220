"""NS16550A UART (National Semiconductor "PC16550D UART with FIFOs" datasheet, 1995).

The serial line has no timing: a byte written to THR reaches the host sink at once, so the
transmitter is always empty (LSR.THRE and LSR.TEMT always read 1) and the guest-visible
behaviour depends only on the order of guest accesses and host input, never on the host
clock. Character times are zero, which settles the one timing-based rule of the chip: the
FIFO "character timeout" (datasheet, "FIFO Interrupt Mode Operation") holds whenever the RX
FIFO has data below its trigger level, because four character times of silence have always
passed by the time the guest looks.

Host input comes from an optional `rx_source`, pulled one byte at a time at points the guest
drives: a read of LSR, or, with the received-data interrupt enabled, enabling it, reading IIR
and emptying the FIFO. The same input bytes therefore reach the guest at the same
instructions on every run, however the host delivers them. `rx_source(block)` returns the
next byte or None (nothing yet, or never again); `block` asks it to wait (the hypervisor does
so only when every vCPU is halted and this UART could wake one).
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum, IntFlag
from typing import Callable

from vtemu.devices.bus import IrqLine

# Register offsets from the base port (datasheet Table II, "Register Addresses").
RBR_THR_DLL = 0
IER_DLM = 1
IIR_FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7

FIFO_DEPTH = 16
RX_TRIGGER_LEVELS = (1, 4, 8, 14)      # FCR bits 7:6
DEFAULT_DIVISOR = 12                   # 9600 baud: what the PC BIOS (and QEMU's reset) programs
DIVISOR_CLOCK_HZ = 115_200             # 1.8432 MHz crystal / 16


class Ier(IntFlag):
    ERBFI = 0x01        # received data available (and FIFO timeout)
    ETBEI = 0x02        # transmitter holding register empty
    ELSI = 0x04         # receiver line status
    EDSSI = 0x08        # modem status


class Lcr(IntFlag):
    BREAK = 0x40
    DLAB = 0x80


class Mcr(IntFlag):
    DTR = 0x01
    RTS = 0x02
    OUT1 = 0x04
    OUT2 = 0x08
    LOOP = 0x10


class Lsr(IntFlag):
    DR = 0x01
    OE = 0x02
    PE = 0x04
    FE = 0x08
    BI = 0x10
    THRE = 0x20
    TEMT = 0x40
    RX_FIFO_ERROR = 0x80


LINE_STATUS_ERRORS = Lsr.OE | Lsr.PE | Lsr.FE | Lsr.BI


class Msr(IntFlag):
    DCTS = 0x01
    DDSR = 0x02
    TERI = 0x04
    DDCD = 0x08
    CTS = 0x10
    DSR = 0x20
    RI = 0x40
    DCD = 0x80


MODEM_LINES = Msr.CTS | Msr.DSR | Msr.RI | Msr.DCD
# A terminal is attached: the PC sees it ready to talk (QEMU's serial reset state too).
CONNECTED_TERMINAL = Msr.CTS | Msr.DSR | Msr.DCD


class Fcr(IntFlag):
    ENABLE = 0x01
    RX_RESET = 0x02
    TX_RESET = 0x04
    DMA_MODE = 0x08


class IirSource(IntEnum):
    """IIR bits 3:0 (datasheet Table IV), listed here from lowest to highest priority."""

    MODEM_STATUS = 0x00
    NONE = 0x01
    THR_EMPTY = 0x02
    RX_DATA = 0x04
    LINE_STATUS = 0x06
    RX_TIMEOUT = 0x0C


IIR_FIFOS_ENABLED = 0xC0


class Uart16550:
    """One NS16550A as the PC wires it: IRQ output gated by OUT2, modem inputs from a terminal."""

    def __init__(self, tx: Callable[[bytes], None], irq: IrqLine,
                 modem_inputs: Msr = CONNECTED_TERMINAL,
                 rx_source: Callable[[bool], int | None] | None = None) -> None:
        self._tx = tx
        self._rx_source = rx_source
        self._irq = irq
        self._irq_level = False
        self._ier = Ier(0)
        self._lcr = 0
        self._mcr = Mcr(0)
        self._scr = 0
        self._divisor = DEFAULT_DIVISOR
        self._fifo_enabled = False
        self._rx_trigger = RX_TRIGGER_LEVELS[0]
        self._dma_mode = False
        self._rx: deque[int] = deque()
        self._rbr = 0                   # the RBR keeps the last character once the FIFO is empty
        self._line_errors = Lsr(0)
        self._thr_interrupt = False     # "THRE interrupt pending", cleared by IIR read / THR write
        self._external_inputs = Msr(modem_inputs) & MODEM_LINES
        self._inputs = self._external_inputs
        self._msr_deltas = Msr(0)
        self.rx_dropped = 0             # host bytes refused while the receiver input is looped back

    # --- host side ---------------------------------------------------------------------------
    def feed_rx(self, data: bytes) -> None:
        """Bytes arriving on the serial input (SIN); more than the FIFO holds overrun it."""
        if self._mcr & Mcr.LOOP:
            # Loopback disconnects SIN from the receiver (datasheet, MCR bit 4).
            self.rx_dropped += len(data)
            return
        for byte in data:
            self._receive(byte)
        self._update_irq()

    def wait_for_input(self) -> bool:
        """Block for host input if the guest waits for it by interrupt; True if a byte came."""
        if not self._ier & Ier.ERBFI or not self._mcr & Mcr.OUT2:
            return False
        return self._pull(block=True)

    def _pull(self, block: bool = False) -> bool:
        """One byte from the host into an empty receiver, when there is a host end."""
        if self._rx_source is None or self._rx or self._mcr & Mcr.LOOP:
            return False
        byte = self._rx_source(block)
        if byte is None:
            return False
        self._receive(byte)
        self._update_irq()
        return True

    def _pull_for_interrupt(self) -> None:
        if self._ier & Ier.ERBFI:
            self._pull()

    @property
    def rx_room(self) -> int:
        """How many bytes feed_rx can take without overrun, so a host feeder can pace input."""
        if self._mcr & Mcr.LOOP:
            return 0
        return self._rx_capacity() - len(self._rx)

    def set_modem_inputs(self, lines: Msr) -> None:
        """Change the CTS/DSR/RI/DCD input pins as a modem or terminal would."""
        self._external_inputs = Msr(lines) & MODEM_LINES
        self._refresh_modem_inputs()
        self._update_irq()

    @property
    def irq_level(self) -> bool:
        return self._irq_level

    @property
    def baud_rate(self) -> int:
        """For diagnostics only: the line itself is untimed. 0 while the divisor is 0."""
        return DIVISOR_CLOCK_HZ // self._divisor if self._divisor else 0

    # --- port I/O ----------------------------------------------------------------------------
    def io_read(self, offset: int, size: int) -> int:
        dlab = bool(self._lcr & Lcr.DLAB)
        if offset == RBR_THR_DLL:
            return self._divisor & 0xFF if dlab else self._read_rbr()
        if offset == IER_DLM:
            return self._divisor >> 8 if dlab else int(self._ier)
        if offset == IIR_FCR:
            return self._read_iir()
        if offset == LCR:
            return self._lcr
        if offset == MCR:
            return int(self._mcr)
        if offset == LSR:
            return self._read_lsr()
        if offset == MSR:
            return self._read_msr()
        return self._scr

    def io_write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        dlab = bool(self._lcr & Lcr.DLAB)
        if offset == RBR_THR_DLL:
            if dlab:
                self._divisor = (self._divisor & 0xFF00) | value
            else:
                self._write_thr(value)
        elif offset == IER_DLM:
            if dlab:
                self._divisor = (self._divisor & 0x00FF) | (value << 8)
            else:
                self._write_ier(value)
        elif offset == IIR_FCR:
            self._write_fcr(value)
        elif offset == LCR:
            # The BREAK bit is stored but signals nothing: an untimed line has no spacing state.
            self._lcr = value
        elif offset == MCR:
            self._write_mcr(value)
        elif offset == SCR:
            self._scr = value
        # LSR and MSR writes are factory-test only (datasheet, "Line Status Register"): ignored.

    # --- receiver ----------------------------------------------------------------------------
    def _rx_capacity(self) -> int:
        return FIFO_DEPTH if self._fifo_enabled else 1

    def _receive(self, byte: int) -> None:
        if len(self._rx) < self._rx_capacity():
            self._rx.append(byte)
            return
        self._line_errors |= Lsr.OE
        if not self._fifo_enabled:
            # 16450 mode: the new character overwrites the unread one in RBR (LSR bit 1).
            self._rx[-1] = byte
        # FIFO mode: the character stays in the shift register and is lost (LSR bit 1).

    def _read_rbr(self) -> int:
        if self._rx:
            self._rbr = self._rx.popleft()
            self._pull_for_interrupt()
            self._update_irq()
        return self._rbr

    def _read_lsr(self) -> int:
        self._pull()
        value = self._line_errors | Lsr.THRE | Lsr.TEMT
        if self._rx:
            value |= Lsr.DR
        # OE, PE, FE and BI are cleared by reading LSR (datasheet, LSR bits 1-4).
        self._line_errors = Lsr(0)
        self._update_irq()
        return int(value)

    # --- transmitter -------------------------------------------------------------------------
    def _write_thr(self, value: int) -> None:
        # Writing THR clears the THRE interrupt; the byte leaves at once and THR is empty again,
        # which raises a new THRE interrupt: the IRQ line drops and rises, one edge per byte,
        # exactly as the chip does once its transmitter moves the byte into the shift register.
        self._thr_interrupt = False
        self._update_irq()
        if self._mcr & Mcr.LOOP:
            self._receive(value)
        else:
            # Data bits are not masked to the LCR word length: the sink carries bytes, and
            # QEMU does the same, so guests that never program LCR still print.
            self._tx(bytes((value,)))
        self._thr_interrupt = True
        self._update_irq()

    def _write_ier(self, value: int) -> None:
        new = Ier(value & 0x0F)
        if new & Ier.ETBEI and not self._ier & Ier.ETBEI:
            # Enabling ETBEI while THR is empty raises the interrupt at once (datasheet, IER).
            self._thr_interrupt = True
        self._ier = new
        self._pull_for_interrupt()
        self._update_irq()

    def _write_fcr(self, value: int) -> None:
        enable = bool(value & Fcr.ENABLE)
        if enable != self._fifo_enabled:
            # Switching between 16450 and FIFO mode clears the FIFOs (datasheet, FCR bit 0).
            self._rx.clear()
            self._fifo_enabled = enable
        if enable:
            # The other FCR bits are programmed only together with FCR0 = 1.
            if value & Fcr.RX_RESET:
                self._rx.clear()
            # TX_RESET has nothing to clear: the transmitter never holds a byte.
            self._dma_mode = bool(value & Fcr.DMA_MODE)
            self._rx_trigger = RX_TRIGGER_LEVELS[value >> 6]
        self._update_irq()

    # --- modem control and status ------------------------------------------------------------
    def _write_mcr(self, value: int) -> None:
        self._mcr = Mcr(value & 0x1F)
        self._refresh_modem_inputs()
        self._update_irq()

    def _looped_inputs(self) -> Msr:
        """Loopback wiring (datasheet, MCR bit 4): DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD."""
        wiring = ((Mcr.DTR, Msr.DSR), (Mcr.RTS, Msr.CTS), (Mcr.OUT1, Msr.RI), (Mcr.OUT2, Msr.DCD))
        lines = Msr(0)
        for output, line in wiring:
            if self._mcr & output:
                lines |= line
        return lines

    def _refresh_modem_inputs(self) -> None:
        new = self._looped_inputs() if self._mcr & Mcr.LOOP else self._external_inputs
        old = self._inputs
        changed = old ^ new
        for line, delta in ((Msr.CTS, Msr.DCTS), (Msr.DSR, Msr.DDSR), (Msr.DCD, Msr.DDCD)):
            if changed & line:
                self._msr_deltas |= delta
        if old & Msr.RI and not new & Msr.RI:
            # TERI flags only the trailing (falling) edge of RI (datasheet, MSR bit 2).
            self._msr_deltas |= Msr.TERI
        self._inputs = new

    def _read_msr(self) -> int:
        value = self._inputs | self._msr_deltas
        self._msr_deltas = Msr(0)
        self._update_irq()
        return int(value)

    # --- interrupts --------------------------------------------------------------------------
    def _pending_source(self) -> IirSource:
        """The highest-priority enabled interrupt (datasheet Table IV)."""
        if self._ier & Ier.ELSI and self._line_errors:
            return IirSource.LINE_STATUS
        if self._ier & Ier.ERBFI and self._rx:
            if self._fifo_enabled and len(self._rx) < self._rx_trigger:
                return IirSource.RX_TIMEOUT
            return IirSource.RX_DATA
        if self._ier & Ier.ETBEI and self._thr_interrupt:
            return IirSource.THR_EMPTY
        if self._ier & Ier.EDSSI and self._msr_deltas:
            return IirSource.MODEM_STATUS
        return IirSource.NONE

    def _read_iir(self) -> int:
        self._pull_for_interrupt()
        source = self._pending_source()
        if source is IirSource.THR_EMPTY:
            # Reading IIR while THRE is the reported source clears it (datasheet Table IV).
            self._thr_interrupt = False
            self._update_irq()
        return int(source) | (IIR_FIFOS_ENABLED if self._fifo_enabled else 0)

    def _update_irq(self) -> None:
        # On the PC the INTRPT pin reaches the bus through a buffer enabled by OUT2. Loopback
        # forces the OUT pins inactive (datasheet, MCR bit 4), so a looped-back UART raises
        # no IRQ on a PC even with OUT2 set. (QEMU ignores OUT2: a guest that forgets OUT2
        # gets interrupts there and none here, as on real hardware.)
        gated_on = bool(self._mcr & Mcr.OUT2) and not self._mcr & Mcr.LOOP
        level = gated_on and self._pending_source() is not IirSource.NONE
        if level != self._irq_level:
            self._irq_level = level
            self._irq.set_level(level)
