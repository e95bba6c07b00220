"""MC146818 CMOS/RTC: time from guest time in every format, UIP, flags and IRQ 8, NVRAM, NMI."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.unit.devices.fakes import RecordingLine, advance_to
from vtemu.devices.cmos_rtc import CmosRtc
from vtemu.machine.clock import GuestClock

S = 1_000_000_000
MiB = 1024 * 1024
SEC, SEC_ALARM, MIN, MIN_ALARM, HOUR, HOUR_ALARM = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
DOW, DOM, MONTH, YEAR, CENTURY = 0x06, 0x07, 0x08, 0x09, 0x32
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D


@pytest.fixture
def clock() -> GuestClock:
    return GuestClock()


@pytest.fixture
def irq8() -> RecordingLine:
    return RecordingLine()


@pytest.fixture
def rtc(clock: GuestClock, irq8: RecordingLine) -> CmosRtc:
    return CmosRtc(clock, irq8, 128 * MiB)      # epoch 2026-01-01 00:00:00 UTC, a Thursday


def read(rtc: CmosRtc, index: int) -> int:
    rtc.io_write(0, 1, index)
    return rtc.io_read(1, 1)


def write(rtc: CmosRtc, index: int, value: int) -> None:
    rtc.io_write(0, 1, index)
    rtc.io_write(1, 1, value)


def calendar(rtc: CmosRtc) -> list[int]:
    return [read(rtc, index) for index in (SEC, MIN, HOUR, DOW, DOM, MONTH, YEAR, CENTURY)]


def test_time_in_bcd_24_hour_format(clock: GuestClock, rtc: CmosRtc) -> None:
    advance_to(clock, (86_400 + 13 * 3600 + 45 * 60 + 30) * S + 999)
    assert read(rtc, REG_B) == 0x02
    assert calendar(rtc) == [0x30, 0x45, 0x13, 6, 0x02, 0x01, 0x26, 0x20]   # Friday = 6


def test_time_in_binary_format(clock: GuestClock, rtc: CmosRtc) -> None:
    write(rtc, REG_B, 0x06)
    advance_to(clock, (86_400 * 40 + 23 * 3600 + 59 * 60 + 59) * S)       # 2026-02-10
    assert calendar(rtc) == [59, 59, 23, 3, 10, 2, 26, 20]                 # Tuesday = 3


@pytest.mark.parametrize("binary, hour, expected", [
    (False, 0, 0x12), (False, 11, 0x11), (False, 12, 0x92), (False, 13, 0x81), (False, 23, 0x91),
    (True, 0, 12), (True, 12, 0x80 | 12), (True, 23, 0x80 | 11),
])
def test_12_hour_format(clock: GuestClock, rtc: CmosRtc, binary: bool, hour: int, expected: int) -> None:
    write(rtc, REG_B, 0x04 if binary else 0x00)
    advance_to(clock, hour * 3600 * S)
    assert read(rtc, HOUR) == expected


def test_seconds_change_exactly_on_guest_second_boundaries(clock: GuestClock, rtc: CmosRtc) -> None:
    advance_to(clock, 7 * S - 1)
    assert read(rtc, SEC) == 0x06
    advance_to(clock, 7 * S)
    assert read(rtc, SEC) == 0x07


def test_uip_is_set_in_the_last_244_us_of_each_second(clock: GuestClock, rtc: CmosRtc) -> None:
    advance_to(clock, 3 * S - 244_001)
    assert read(rtc, REG_A) == 0x26
    advance_to(clock, 3 * S - 244_000)
    assert read(rtc, REG_A) == 0x80 | 0x26
    advance_to(clock, 3 * S)
    assert read(rtc, REG_A) == 0x26


def test_register_a_divider_and_rate_are_writable_but_uip_is_not(rtc: CmosRtc) -> None:
    write(rtc, REG_A, 0xA3)
    assert read(rtc, REG_A) == 0x23


def test_register_d_reports_valid_ram_and_time(rtc: CmosRtc) -> None:
    assert read(rtc, REG_D) == 0x80
    write(rtc, REG_D, 0x00)
    assert read(rtc, REG_D) == 0x80


def test_register_c_flags_are_read_to_clear(clock: GuestClock, rtc: CmosRtc, irq8: RecordingLine) -> None:
    write(rtc, REG_A, 0x20)                      # no periodic rate
    advance_to(clock, S)
    assert read(rtc, REG_C) == 0x10              # UF, set whatever B enables; no IRQF
    assert read(rtc, REG_C) == 0x00
    assert irq8.levels == []
    assert clock.next_deadline_ns() is None      # nothing enabled: no timer


@pytest.mark.parametrize("ram, expected", [
    (32 * MiB, {0x15: 0x80, 0x16: 0x02, 0x17: 0x00, 0x18: 0x7C, 0x30: 0x00, 0x31: 0x7C,
                0x34: 0x00, 0x35: 0x01}),                   # 31744 KiB; 256 x 64 KiB
    (128 * MiB, {0x15: 0x80, 0x16: 0x02, 0x17: 0xFF, 0x18: 0xFF, 0x30: 0xFF, 0x31: 0xFF,
                 0x34: 0x00, 0x35: 0x07}),                  # 130048 KiB capped at 0xFFFF
    (1024 * MiB, {0x15: 0x80, 0x16: 0x02, 0x17: 0xFF, 0x18: 0xFF, 0x30: 0xFF, 0x31: 0xFF,
                  0x34: 0x00, 0x35: 0x3F}),
    (512 * 1024, {0x15: 0x00, 0x16: 0x02, 0x17: 0x00, 0x18: 0x00, 0x34: 0x00, 0x35: 0x00}),
])
def test_memory_size_bytes(clock: GuestClock, ram: int, expected: dict[int, int]) -> None:
    rtc = CmosRtc(clock, RecordingLine(), ram)
    assert {index: read(rtc, index) for index in expected} == expected


def test_index_port_nmi_bit(rtc: CmosRtc) -> None:
    assert not rtc.nmi_disabled
    rtc.io_write(0, 1, 0x80 | 0x0F)
    assert rtc.nmi_disabled and rtc.index == 0x0F
    rtc.io_write(0, 1, 0x0F)
    assert not rtc.nmi_disabled
    assert rtc.io_read(0, 1) == 0xFF             # the index port is write-only


def test_other_bytes_are_plain_nvram(rtc: CmosRtc) -> None:
    write(rtc, 0x40, 0x5A)
    write(rtc, 0x7F, 0xA5)
    write(rtc, 0x15, 0x00)                       # memory bytes are NVRAM too
    assert (read(rtc, 0x40), read(rtc, 0x7F), read(rtc, 0x15)) == (0x5A, 0xA5, 0x00)
    rtc.io_write(0, 1, 0x80 | 0x40)              # NMI bit is not part of the index
    assert rtc.io_read(1, 1) == 0x5A


def test_setting_the_time_under_set(clock: GuestClock, rtc: CmosRtc) -> None:
    advance_to(clock, 10 * S)
    write(rtc, REG_B, 0x82)
    write(rtc, MONTH, 0x02)
    write(rtc, DOM, 0x29)                        # 29 Feb 2026 does not exist yet: kept as written
    write(rtc, YEAR, 0x28)
    write(rtc, HOUR, 0x23)
    write(rtc, MIN, 0x59)
    write(rtc, SEC, 0x58)
    advance_to(clock, 20 * S)
    assert read(rtc, SEC) == 0x58                # frozen while SET
    assert read(rtc, DOM) == 0x29
    write(rtc, REG_B, 0x02)
    assert calendar(rtc) == [0x58, 0x59, 0x23, 3, 0x29, 0x02, 0x28, 0x20]  # Tue 2028-02-29
    advance_to(clock, 22 * S)
    assert calendar(rtc) == [0x00, 0x00, 0x00, 4, 0x01, 0x03, 0x28, 0x20]  # Wed 2028-03-01


def test_garbage_written_under_set_reads_back_as_a_byte(rtc: CmosRtc) -> None:
    write(rtc, REG_B, 0x82)
    write(rtc, HOUR, 0xFF)                       # BCD "165": kept while SET, still one byte
    assert read(rtc, HOUR) == 0x65               # 165 mod 100, re-encoded
    write(rtc, REG_B, 0x02)                      # released: clamped to a real time
    assert read(rtc, HOUR) == 0x23


def test_set_clears_uie_and_uip(clock: GuestClock, rtc: CmosRtc) -> None:
    write(rtc, REG_B, 0x12)
    write(rtc, REG_B, 0x92)
    assert read(rtc, REG_B) == 0x82
    advance_to(clock, S - 1)
    assert read(rtc, REG_A) & 0x80 == 0


def test_century_register_write(clock: GuestClock, rtc: CmosRtc) -> None:
    write(rtc, CENTURY, 0x21)
    assert (read(rtc, YEAR), read(rtc, CENTURY)) == (0x26, 0x21)


def test_day_of_week_is_kept_as_written(clock: GuestClock, rtc: CmosRtc) -> None:
    write(rtc, DOW, 1)
    assert read(rtc, DOW) == 1
    advance_to(clock, 86_400 * S)
    assert read(rtc, DOW) == 2
    advance_to(clock, 7 * 86_400 * S)
    assert read(rtc, DOW) == 1


def test_custom_epoch_rolls_over_the_century(clock: GuestClock, irq8: RecordingLine) -> None:
    rtc = CmosRtc(clock, irq8, 16 * MiB, datetime(1999, 12, 31, 23, 59, 59, tzinfo=timezone.utc))
    assert (read(rtc, YEAR), read(rtc, CENTURY)) == (0x99, 0x19)
    advance_to(clock, S)
    assert calendar(rtc) == [0, 0, 0, 7, 0x01, 0x01, 0x00, 0x20]           # Saturday


def test_periodic_interrupt_at_the_programmed_rate(clock: GuestClock, rtc: CmosRtc, irq8: RecordingLine) -> None:
    write(rtc, REG_B, 0x42)                      # PIE; A = 0x26: 1024 Hz, 976562.5 ns
    assert clock.next_deadline_ns() == 976_563
    advance_to(clock, 976_562)
    assert irq8.levels == []
    advance_to(clock, 976_563)
    assert irq8.levels == [True]
    assert read(rtc, REG_C) == 0xC0              # IRQF | PF
    assert irq8.levels == [True, False]
    assert clock.next_deadline_ns() == 1_953_125
    advance_to(clock, 1_953_125)
    assert irq8.levels == [True, False, True]


@pytest.mark.parametrize("rate_select, period_ns", [
    (0x1, 3_906_250),                            # RS 1 repeats RS 8: 256 Hz
    (0x2, 7_812_500),                            # RS 2 repeats RS 9: 128 Hz
    (0x3, 122_071),                              # 8192 Hz: 122070.3125 ns, rounded up
    (0xF, 500_000_000),                          # 2 Hz
])
def test_periodic_rate_select_table(clock: GuestClock, rtc: CmosRtc, rate_select: int, period_ns: int) -> None:
    write(rtc, REG_A, 0x20 | rate_select)
    write(rtc, REG_B, 0x42)
    assert clock.next_deadline_ns() == period_ns


def test_update_ended_interrupt(clock: GuestClock, rtc: CmosRtc, irq8: RecordingLine) -> None:
    write(rtc, REG_A, 0x20)
    write(rtc, REG_B, 0x12)
    advance_to(clock, S - 1)
    assert not irq8.level
    advance_to(clock, S)
    assert irq8.level
    assert read(rtc, REG_C) == 0x90
    assert not irq8.level


def test_alarm_interrupt(clock: GuestClock, rtc: CmosRtc, irq8: RecordingLine) -> None:
    write(rtc, REG_A, 0x20)
    write(rtc, SEC_ALARM, 0x05)
    write(rtc, MIN_ALARM, 0x00)
    write(rtc, HOUR_ALARM, 0x00)
    write(rtc, REG_B, 0x22)                      # AIE
    assert clock.next_deadline_ns() == 5 * S
    advance_to(clock, 5 * S)
    assert irq8.level
    assert read(rtc, REG_C) == 0x80 | 0x20 | 0x10    # IRQF, AF, and UF (set regardless)


def test_alarm_dont_care_bytes_match_every_value(clock: GuestClock, rtc: CmosRtc, irq8: RecordingLine) -> None:
    write(rtc, REG_A, 0x20)
    write(rtc, SEC_ALARM, 0x30)
    write(rtc, MIN_ALARM, 0xC0)
    write(rtc, HOUR_ALARM, 0xFF)
    write(rtc, REG_B, 0x22)
    advance_to(clock, 30 * S)
    assert irq8.level
    read(rtc, REG_C)
    assert clock.next_deadline_ns() == 90 * S


def test_building_an_rtc_leaves_the_guest_clock_dormant(clock: GuestClock, rtc: CmosRtc) -> None:
    read(rtc, 0x40)
    assert not clock.live
    read(rtc, SEC)
    assert clock.live
