"""Intel 8254: counting from guest time, OUT/IRQ 0 edges at exact deadlines, latches, modes."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from tests.unit.devices.fakes import TimedLine, advance_to
from vtemu.devices.pic8259 import Pic8259Pair
from vtemu.devices.pit8254 import Pit8254
from vtemu.machine.clock import GuestClock

PIT_HZ = 1_193_182
CONTROL = 3
NS_PER_TICK = Fraction(10**9, PIT_HZ)


def tick_of(ns: int) -> int:
    """PIT clock edges in (0, ns], computed independently of the device's integer trick."""
    return math.floor(ns / NS_PER_TICK)


def ns_of(tick: int) -> int:
    return math.ceil(tick * NS_PER_TICK)


@pytest.fixture
def clock() -> GuestClock:
    return GuestClock()


@pytest.fixture
def irq0(clock: GuestClock) -> TimedLine:
    return TimedLine(clock)


@pytest.fixture
def pit(clock: GuestClock, irq0: TimedLine) -> Pit8254:
    return Pit8254(clock, irq0)


def program(pit: Pit8254, counter: int, mode: int, count: int, bcd: bool = False) -> None:
    pit.io_write(CONTROL, 1, (counter << 6) | 0x30 | (mode << 1) | int(bcd))
    pit.io_write(counter, 1, count & 0xFF)
    pit.io_write(counter, 1, count >> 8)


def read_count(pit: Pit8254, counter: int) -> int:
    low = pit.io_read(counter, 1)
    return low | pit.io_read(counter, 1) << 8


def read_status(pit: Pit8254, counter: int) -> int:
    pit.io_write(CONTROL, 1, 0xE0 | (2 << counter))     # read-back, status only
    return pit.io_read(counter, 1)


def expect_transitions(clock: GuestClock, line: TimedLine, transitions: list[tuple[int, bool]]) -> None:
    """Each (tick, level): unchanged one ns before the tick's deadline, changed exactly at it."""
    for tick, level in transitions:
        deadline = ns_of(tick)
        advance_to(clock, deadline - 1)
        assert line.level is (not level), f"OUT changed before tick {tick}"
        advance_to(clock, deadline)
        assert line.level is level, f"OUT did not change at tick {tick}"
        assert line.events[-1] == (deadline, level)


def test_mode2_rate_generator_edges_at_exact_deadlines(clock: GuestClock, irq0: TimedLine, pit: Pit8254) -> None:
    advance_to(clock, 1_000)
    n = 100
    program(pit, 0, 2, n)
    assert irq0.levels == [True]                 # mode set: OUT high
    load = tick_of(1_000) + 1                    # loaded on the next CLK edge
    expected = []
    for k in range(1, 4):
        expected += [(load + k * n - 1, False), (load + k * n, True)]
    expect_transitions(clock, irq0, expected)
    assert irq0.rising_edges == 4


def test_mode0_one_rising_edge_at_terminal_count(clock: GuestClock, irq0: TimedLine, pit: Pit8254) -> None:
    advance_to(clock, 5_000)
    n = 300
    program(pit, 0, 0, n)
    assert irq0.levels == []                     # OUT starts low in mode 0, as the line is
    load = tick_of(5_000) + 1
    expect_transitions(clock, irq0, [(load + n, True)])
    assert clock.next_deadline_ns() is None
    advance_to(clock, ns_of(load + 10 * 65536))
    assert irq0.levels == [True]


def test_mode0_count_keeps_running_after_terminal_count(clock: GuestClock, pit: Pit8254) -> None:
    program(pit, 0, 0, 10)
    advance_to(clock, ns_of(1 + 12))             # 12 clocks after the load: count wrapped
    assert read_count(pit, 0) == (10 - 12) % 65536


@pytest.mark.parametrize("n", [8, 7])
def test_mode3_square_wave_duty_cycle(clock: GuestClock, irq0: TimedLine, pit: Pit8254, n: int) -> None:
    program(pit, 0, 3, n)
    load = 1
    high = (n + 1) // 2                          # odd counts: high one clock longer
    expected = []
    for k in range(3):
        start = load + k * n
        expected += [(start + high, False), (start + n, True)]
    expect_transitions(clock, irq0, expected)


def test_mode3_count_sequence_even_and_odd(clock: GuestClock, pit: Pit8254) -> None:
    program(pit, 0, 3, 6)
    program(pit, 1, 3, 5)
    seen0, seen1 = [], []
    for tick in range(1, 1 + 12):
        advance_to(clock, ns_of(tick))
        seen0.append(read_count(pit, 0))
        seen1.append(read_count(pit, 1))
    assert seen0 == [6, 4, 2] * 4                            # decrement by two, both halves
    assert seen1 == [4, 2, 0, 4, 2, 4, 2, 0, 4, 2, 4, 2]     # odd: loads n-1, high 3, low 2


def test_count_of_zero_means_65536(clock: GuestClock, irq0: TimedLine, pit: Pit8254) -> None:
    program(pit, 0, 2, 0)
    advance_to(clock, ns_of(1))
    assert read_count(pit, 0) == 0               # 65536 reads back as 0
    advance_to(clock, ns_of(2))
    assert read_count(pit, 0) == 65535
    expect_transitions(clock, irq0, [(1 + 65535, False), (1 + 65536, True)])


def test_latch_returns_the_count_at_latch_time(clock: GuestClock, pit: Pit8254) -> None:
    n = 1000
    program(pit, 0, 2, n)
    latch_ns = 123_457
    advance_to(clock, latch_ns)
    pit.io_write(CONTROL, 1, 0x00)               # counter latch, counter 0
    expected = n - (tick_of(latch_ns) - 1) % n
    advance_to(clock, 300_000)
    pit.io_write(CONTROL, 1, 0x00)               # a second latch before reading is ignored
    assert read_count(pit, 0) == expected
    assert read_count(pit, 0) == n - (tick_of(300_000) - 1) % n   # latch released


def test_reading_a_counter_without_any_timer(clock: GuestClock, pit: Pit8254) -> None:
    advance_to(clock, 777)
    program(pit, 2, 0, 5000)
    assert clock.next_deadline_ns() is None      # counter 2 has no wire: nothing armed
    advance_to(clock, 2_000_000)
    assert read_count(pit, 2) == 5000 - (tick_of(2_000_000) - (tick_of(777) + 1))


def test_lsb_only_and_msb_only_access(clock: GuestClock, pit: Pit8254) -> None:
    pit.io_write(CONTROL, 1, 0x50)               # counter 1, LSB only, mode 0
    pit.io_write(1, 1, 0x80)
    advance_to(clock, ns_of(1))
    assert pit.io_read(1, 1) == 0x80
    pit.io_write(CONTROL, 1, 0x60)               # counter 1, MSB only, mode 0
    pit.io_write(1, 1, 0x02)
    advance_to(clock, ns_of(2 + 0x10))
    assert pit.io_read(1, 1) == (0x200 - 0x10) >> 8
    pit.io_write(CONTROL, 1, 0x40)
    assert pit.io_read(1, 1) == (0x200 - 0x10) >> 8   # latched MSB


def test_read_and_write_flip_flops_interleave(clock: GuestClock, pit: Pit8254) -> None:
    program(pit, 1, 0, 0x1234)
    advance_to(clock, ns_of(1))                  # loaded: 0x1234
    pit.io_write(CONTROL, 1, 0x40)
    assert pit.io_read(1, 1) == 0x34             # read LSB
    pit.io_write(1, 1, 0xCD)                     # write new LSB
    assert pit.io_read(1, 1) == 0x12             # read MSB
    pit.io_write(1, 1, 0xAB)                     # write new MSB
    advance_to(clock, ns_of(2))
    assert read_count(pit, 1) == 0xABCD


def test_mode0_first_byte_stops_counting(clock: GuestClock, irq0: TimedLine, pit: Pit8254) -> None:
    program(pit, 0, 0, 5)
    advance_to(clock, ns_of(1 + 5))
    assert irq0.level
    advance_to(clock, ns_of(10))
    pit.io_write(0, 1, 0x00)                     # LSB of a new count
    assert not irq0.level                        # OUT low at once
    frozen = read_count(pit, 0)
    advance_to(clock, ns_of(30))
    assert read_count(pit, 0) == frozen
    pit.io_write(0, 1, 0x01)                     # MSB: count 0x100 loads on the next edge
    expect_transitions(clock, irq0, [(30 + 1 + 0x100, True)])


def test_read_back_status_reports_out_null_count_and_mode(clock: GuestClock, pit: Pit8254) -> None:
    advance_to(clock, 10_000)
    pit.io_write(CONTROL, 1, 0x34)
    assert read_status(pit, 0) == 0x80 | 0x40 | 0x34       # OUT high, null count, RW=3, mode 2
    pit.io_write(0, 1, 50)
    pit.io_write(0, 1, 0)
    assert read_status(pit, 0) & 0x40                       # not loaded until the next edge
    advance_to(clock, ns_of(tick_of(10_000) + 1))
    assert read_status(pit, 0) == 0x80 | 0x34
    program(pit, 1, 0, 20)
    assert read_status(pit, 1) & 0x80 == 0                  # mode 0: OUT low until TC
    advance_to(clock, ns_of(tick_of(clock.peek_ns()) + 1 + 20))
    assert read_status(pit, 1) & 0x80


def test_read_back_latches_status_before_count(clock: GuestClock, pit: Pit8254) -> None:
    program(pit, 2, 2, 0x0300)
    advance_to(clock, ns_of(1 + 0x10))
    pit.io_write(CONTROL, 1, 0xC8)               # read-back: count and status of counter 2
    advance_to(clock, ns_of(1 + 0x80))
    assert pit.io_read(2, 1) == 0x80 | 0x34
    assert read_count(pit, 2) == 0x0300 - 0x10


def test_reprogramming_cancels_the_armed_edge(clock: GuestClock, irq0: TimedLine, pit: Pit8254) -> None:
    program(pit, 0, 2, 100)
    assert clock.next_deadline_ns() == ns_of(1 + 99)
    advance_to(clock, ns_of(50))
    program(pit, 0, 0, 1000)                     # mode 0 from tick 50: OUT low, TC at 51+1000
    assert not irq0.level
    assert clock.next_deadline_ns() == ns_of(50 + 1 + 1000)
    advance_to(clock, ns_of(50 + 1000))
    assert irq0.rising_edges == 1                # only the mode set's initial high


def test_mode2_new_count_waits_for_the_end_of_the_period(clock: GuestClock, irq0: TimedLine, pit: Pit8254) -> None:
    program(pit, 0, 2, 100)
    advance_to(clock, ns_of(40))
    pit.io_write(0, 1, 50)
    pit.io_write(0, 1, 0)
    expect_transitions(clock, irq0, [(100, False), (101, True),         # old period completes
                                     (101 + 49, False), (101 + 50, True)])


def test_mode3_new_count_waits_for_the_end_of_the_half_cycle(clock: GuestClock, irq0: TimedLine, pit: Pit8254) -> None:
    program(pit, 0, 3, 100)                      # high ticks 1..50, falls at 51
    advance_to(clock, ns_of(20))
    pit.io_write(0, 1, 10)
    pit.io_write(0, 1, 0)
    # The current high half ends at 51; the new count runs its low half (5) then cycles.
    expect_transitions(clock, irq0, [(51, False), (56, True), (61, False), (66, True)])


def test_mode4_strobes_low_for_one_clock(clock: GuestClock, irq0: TimedLine, pit: Pit8254) -> None:
    program(pit, 0, 4, 30)
    expect_transitions(clock, irq0, [(1 + 30, False), (1 + 31, True)])
    assert clock.next_deadline_ns() is None


def test_bcd_counting(clock: GuestClock, pit: Pit8254) -> None:
    program(pit, 1, 0, 0x1000, bcd=True)         # 1000 decimal
    advance_to(clock, ns_of(1 + 11))
    assert read_count(pit, 1) == 0x0989
    program(pit, 1, 2, 0x0000, bcd=True)         # 0 means 10000 in BCD
    start = tick_of(clock.peek_ns()) + 1
    advance_to(clock, ns_of(start + 1))
    assert read_count(pit, 1) == 0x9999


def test_modes_1_and_5_wait_for_a_gate_trigger_that_never_comes(clock: GuestClock, irq0: TimedLine, pit: Pit8254) -> None:
    program(pit, 0, 1, 100)
    advance_to(clock, ns_of(500))
    assert read_count(pit, 0) == 100
    assert read_status(pit, 0) == 0x80 | 0x40 | 0x32        # OUT high, never loaded
    assert clock.next_deadline_ns() is None


def test_late_timer_edges_are_replayed_when_the_guest_reprograms(clock: GuestClock, irq0: TimedLine, pit: Pit8254) -> None:
    program(pit, 0, 2, 10)
    clock.retire(ns_of(1 + 10) + 5 - clock.peek_ns())       # ran past the edge, timers not run
    pit.io_write(CONTROL, 1, 0x30)                          # mode 0: OUT low
    assert irq0.levels == [True, False, True, False]        # the missed low-high pulse shows


def test_control_port_reads_as_floating_bus(pit: Pit8254) -> None:
    assert pit.io_read(CONTROL, 1) == 0xFF


def test_an_unused_pit_leaves_the_guest_clock_dormant(clock: GuestClock, pit: Pit8254) -> None:
    assert not clock.live
    read_count(pit, 0)
    assert clock.live


def test_counter0_drives_an_edge_triggered_8259a_once_per_period(clock: GuestClock) -> None:
    pic = Pic8259Pair()
    for port, value in ((0, 0x11), (1, 0x20), (1, 0x04), (1, 0x01)):
        pic.master.io_write(port, 1, value)
    pit = Pit8254(clock, pic.irq_line(0))
    program(pit, 0, 2, 1000)
    assert pic.intr_asserted()                   # the mode set raised OUT from its reset low
    pic.acknowledge()
    pic.master.io_write(0, 1, 0x20)
    vectors = []
    for k in range(1, 4):
        advance_to(clock, ns_of(1 + k * 1000) - 1)
        assert not pic.intr_asserted()
        advance_to(clock, ns_of(1 + k * 1000))
        assert pic.intr_asserted()
        vectors.append(pic.acknowledge())
        pic.master.io_write(0, 1, 0x20)
    assert vectors == [0x20, 0x20, 0x20]
