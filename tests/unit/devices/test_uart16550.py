"""NS16550A: registers, DLAB, LSR bits, FIFO/overrun, loopback, IIR priority and IRQ levels."""

from __future__ import annotations

import pytest

from tests.unit.devices.fakes import RecordingLine
from vtemu.devices.uart16550 import Msr, Uart16550

THR = RBR = DLL = 0
IER = DLM = 1
IIR = FCR = 2
LCR, MCR, LSR, MSR, SCR = 3, 4, 5, 6, 7
OUT2 = 0x08
LOOP = 0x10


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def __call__(self, chunk: bytes) -> None:
        self.data += chunk


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def irq() -> RecordingLine:
    return RecordingLine()


@pytest.fixture
def uart(sink: Sink, irq: RecordingLine) -> Uart16550:
    return Uart16550(sink, irq)


def test_reset_state(uart: Uart16550) -> None:
    assert uart.io_read(LSR, 1) == 0x60          # THRE | TEMT
    assert uart.io_read(IIR, 1) == 0x01          # no interrupt, FIFOs off
    assert uart.io_read(IER, 1) == 0
    assert uart.io_read(MCR, 1) == 0
    assert uart.io_read(MSR, 1) == 0xB0          # DCD, DSR, CTS from the terminal
    assert uart.baud_rate == 9600


def test_thr_write_goes_to_the_sink(uart: Uart16550, sink: Sink) -> None:
    for byte in b"hi\n":
        uart.io_write(THR, 1, byte)
    assert bytes(sink.data) == b"hi\n"
    assert uart.io_read(LSR, 1) & 0x60 == 0x60


def test_dlab_switches_offsets_0_and_1_to_the_divisor(uart: Uart16550, sink: Sink) -> None:
    uart.io_write(IER, 1, 0x05)
    uart.io_write(LCR, 1, 0x83)
    uart.io_write(DLL, 1, 0x01)
    uart.io_write(DLM, 1, 0x00)
    assert sink.data == b""                      # a DLL write is not a transmission
    assert uart.io_read(DLL, 1) == 0x01 and uart.io_read(DLM, 1) == 0x00
    assert uart.baud_rate == 115200
    uart.io_write(LCR, 1, 0x03)
    assert uart.io_read(IER, 1) == 0x05          # IER untouched by the DLM write
    assert uart.io_read(LCR, 1) == 0x03
    uart.io_write(THR, 1, ord("x"))
    assert bytes(sink.data) == b"x"


def test_ier_keeps_only_its_four_bits(uart: Uart16550) -> None:
    uart.io_write(IER, 1, 0xFF)
    assert uart.io_read(IER, 1) == 0x0F


def test_scratch_register(uart: Uart16550) -> None:
    uart.io_write(SCR, 1, 0xA5)
    assert uart.io_read(SCR, 1) == 0xA5


def test_receive_without_fifo_and_overrun(uart: Uart16550) -> None:
    uart.feed_rx(b"A")
    assert uart.io_read(LSR, 1) == 0x61          # DR
    assert uart.io_read(RBR, 1) == ord("A")
    assert uart.io_read(LSR, 1) == 0x60
    uart.feed_rx(b"BC")
    assert uart.io_read(LSR, 1) == 0x63          # DR | OE
    assert uart.io_read(LSR, 1) == 0x61          # OE cleared by the read
    assert uart.io_read(RBR, 1) == ord("C")      # 16450 mode: the new byte overwrote RBR


def test_fifo_holds_sixteen_then_overruns(uart: Uart16550) -> None:
    uart.io_write(FCR, 1, 0x01)
    assert uart.io_read(IIR, 1) == 0xC1
    uart.feed_rx(bytes(range(16)))
    assert uart.io_read(LSR, 1) & 0x02 == 0
    assert uart.rx_room == 0
    uart.feed_rx(b"\xff")
    assert uart.io_read(LSR, 1) & 0x02
    assert [uart.io_read(RBR, 1) for _ in range(16)] == list(range(16))
    assert uart.io_read(LSR, 1) & 0x01 == 0      # the 17th byte was lost
    assert uart.io_read(RBR, 1) == 15            # RBR keeps the last character


def test_fifo_reset_and_mode_switch_clear_received_data(uart: Uart16550) -> None:
    uart.io_write(FCR, 1, 0x01)
    uart.feed_rx(b"abc")
    uart.io_write(FCR, 1, 0x03)                  # RX FIFO reset
    assert uart.io_read(LSR, 1) & 0x01 == 0
    uart.feed_rx(b"abc")
    uart.io_write(FCR, 1, 0x00)                  # back to 16450 mode
    assert uart.io_read(LSR, 1) & 0x01 == 0
    assert uart.io_read(IIR, 1) == 0x01


def test_trigger_level_selects_data_available_or_timeout(uart: Uart16550, irq: RecordingLine) -> None:
    uart.io_write(FCR, 1, 0xC1)                  # trigger at 14
    uart.io_write(IER, 1, 0x01)
    uart.io_write(MCR, 1, OUT2)
    uart.feed_rx(b"x" * 3)
    assert uart.io_read(IIR, 1) == 0xCC          # below trigger: character timeout
    assert irq.level
    uart.feed_rx(b"x" * 11)
    assert uart.io_read(IIR, 1) == 0xC4          # at the trigger level
    for _ in range(14):
        uart.io_read(RBR, 1)
    assert uart.io_read(IIR, 1) == 0xC1
    assert not irq.level


def test_iir_reports_sources_in_priority_order(uart: Uart16550) -> None:
    uart.io_write(IER, 1, 0x0F)
    uart.feed_rx(b"ab")                          # overrun in 16450 mode: OE + data
    uart.set_modem_inputs(Msr.CTS | Msr.DSR)     # DCD dropped: DDCD
    assert uart.io_read(IIR, 1) == 0x06          # receiver line status
    uart.io_read(LSR, 1)
    assert uart.io_read(IIR, 1) == 0x04          # received data
    uart.io_read(RBR, 1)
    assert uart.io_read(IIR, 1) == 0x02          # THR empty; this read clears it
    assert uart.io_read(IIR, 1) == 0x00          # modem status
    assert uart.io_read(MSR, 1) == 0x30 | 0x08   # CTS, DSR and the DDCD delta
    assert uart.io_read(IIR, 1) == 0x01


def test_thre_interrupt_raised_on_enable_and_after_each_byte(uart: Uart16550, irq: RecordingLine) -> None:
    uart.io_write(MCR, 1, OUT2)
    uart.io_write(IER, 1, 0x02)
    assert irq.levels == [True]
    assert uart.io_read(IIR, 1) == 0x02
    assert irq.levels == [True, False]
    uart.io_write(THR, 1, 0x41)
    assert irq.levels == [True, False, True]
    uart.io_write(THR, 1, 0x42)                  # THR write clears, the empty THR re-raises
    assert irq.levels == [True, False, True, False, True]
    assert irq.rising_edges == 3


def test_out2_gates_the_irq_output(uart: Uart16550, irq: RecordingLine) -> None:
    uart.io_write(IER, 1, 0x01)
    uart.feed_rx(b"z")
    assert uart.io_read(IIR, 1) == 0x04          # pending inside the chip...
    assert irq.levels == []                      # ...but OUT2 is off
    uart.io_write(MCR, 1, OUT2)
    assert irq.levels == [True]
    uart.io_write(MCR, 1, 0)
    assert irq.levels == [True, False]


def test_loopback_returns_tx_to_rx_and_mirrors_modem_lines(uart: Uart16550, sink: Sink) -> None:
    uart.io_write(MCR, 1, LOOP | 0x02 | OUT2)    # RTS -> CTS, OUT2 -> DCD
    assert uart.io_read(MSR, 1) & 0xF0 == 0x90   # what Linux's autoconfig checks
    uart.io_write(THR, 1, 0x5A)
    assert sink.data == b""
    assert uart.io_read(LSR, 1) & 0x01
    assert uart.io_read(RBR, 1) == 0x5A
    uart.io_write(MCR, 1, LOOP | 0x01 | 0x04)    # DTR -> DSR, OUT1 -> RI
    assert uart.io_read(MSR, 1) == 0x60 | 0x01 | 0x02 | 0x08   # DSR, RI + DCTS, DDSR, DDCD
    uart.io_write(MCR, 1, LOOP)
    assert uart.io_read(MSR, 1) == 0x02 | 0x04   # DDSR and TERI (RI fell); no lines


def test_loopback_raises_no_irq_on_a_pc(uart: Uart16550, irq: RecordingLine) -> None:
    uart.io_write(MCR, 1, LOOP | OUT2)
    uart.io_write(IER, 1, 0x01)
    uart.io_write(THR, 1, 1)
    assert uart.io_read(IIR, 1) == 0x04
    assert irq.levels == []
    uart.io_write(MCR, 1, OUT2)                  # leave loopback: the pending data now signals
    assert irq.levels == [True]


def test_loopback_disconnects_the_serial_input(uart: Uart16550) -> None:
    uart.io_write(MCR, 1, LOOP)
    assert uart.rx_room == 0
    uart.feed_rx(b"lost")
    assert uart.rx_dropped == 4
    assert uart.io_read(LSR, 1) & 0x01 == 0


def test_modem_status_interrupt_and_trailing_edge_ring(uart: Uart16550, irq: RecordingLine) -> None:
    uart.io_write(MCR, 1, OUT2)
    uart.io_write(IER, 1, 0x08)
    uart.set_modem_inputs(Msr.CTS | Msr.DSR | Msr.DCD | Msr.RI)
    assert not irq.level                         # RI rising sets no delta
    uart.set_modem_inputs(Msr.CTS | Msr.DSR | Msr.DCD)
    assert irq.level
    assert uart.io_read(MSR, 1) == 0xB0 | 0x04   # TERI
    assert not irq.level


def test_line_status_interrupt_cleared_by_reading_lsr(uart: Uart16550, irq: RecordingLine) -> None:
    uart.io_write(MCR, 1, OUT2)
    uart.io_write(IER, 1, 0x04)
    uart.feed_rx(b"12")
    assert irq.level
    uart.io_read(LSR, 1)
    assert not irq.level


def test_lsr_and_msr_writes_are_ignored(uart: Uart16550) -> None:
    uart.io_write(LSR, 1, 0x1F)
    uart.io_write(MSR, 1, 0x0F)
    assert uart.io_read(LSR, 1) == 0x60
    assert uart.io_read(MSR, 1) == 0xB0


# --- host input, pulled at guest-driven points ---------------------------------------------

class HostInput:
    """An rx_source over fixed bytes that records each pull and whether it was asked to wait."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)
        self.pulls: list[bool] = []

    def __call__(self, block: bool) -> int | None:
        self.pulls.append(block)
        return self.data.pop(0) if self.data else None


def _fed_uart(data: bytes, irq: RecordingLine) -> tuple[Uart16550, HostInput]:
    source = HostInput(data)
    return Uart16550(Sink(), irq, rx_source=source), source


def test_lsr_read_pulls_one_byte_into_an_empty_receiver(irq: RecordingLine) -> None:
    uart, source = _fed_uart(b"ab", irq)
    assert source.pulls == []                          # nothing is read before the guest looks
    assert uart.io_read(LSR, 1) & 0x01                 # DR
    assert uart.io_read(LSR, 1) & 0x01                 # still "a": no second pull
    assert source.pulls == [False]
    assert uart.io_read(RBR, 1) == ord("a")
    assert not uart.io_read(IIR, 1) & 0x04             # received-data interrupt is off: no pull
    assert uart.io_read(LSR, 1) & 0x01 and uart.io_read(RBR, 1) == ord("b")
    assert not uart.io_read(LSR, 1) & 0x01             # input ended: the line stays idle


def test_with_the_interrupt_enabled_each_emptying_read_brings_the_next_byte(irq: RecordingLine) -> None:
    uart, source = _fed_uart(b"xyz", irq)
    uart.io_write(MCR, 1, OUT2)
    uart.io_write(IER, 1, 0x01)                        # ERBFI: "x" arrives, IRQ rises
    assert irq.level and uart.io_read(IIR, 1) & 0x0F == 0x04
    received = bytes(uart.io_read(RBR, 1) for _ in range(3))
    assert received == b"xyz"
    assert not irq.level                               # nothing left: IRQ falls
    assert uart.io_read(IIR, 1) & 0x0F == 0x01


def test_loopback_never_pulls_host_input(irq: RecordingLine) -> None:
    uart, source = _fed_uart(b"q", irq)
    uart.io_write(MCR, 1, LOOP)
    uart.io_read(LSR, 1)
    assert source.pulls == []


def test_wait_for_input_blocks_only_for_a_guest_waiting_by_interrupt(irq: RecordingLine) -> None:
    uart, source = _fed_uart(b"", irq)
    assert not uart.wait_for_input()                   # ERBFI off: nothing to wait for
    assert source.pulls == []
    uart.io_write(MCR, 1, OUT2)
    uart.io_write(IER, 1, 0x01)
    source.data += b"k"
    assert uart.wait_for_input()
    assert source.pulls[-1] is True and irq.level
