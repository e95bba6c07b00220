"""Motorola MC146818 real-time clock and CMOS RAM (MC146818A datasheet), as the PC uses it.

The time of day is epoch + guest time, so the same image sees the same dates on every run.
Seconds tick over exactly on whole seconds of guest time; UIP is set during the 244 us before
each tick ("Update Cycle" -- the datasheet's tBUC), and the update-ended flag is raised at the
tick itself (the 1984 us the real update cycle takes is not modelled: the registers change
atomically).

Register C's flags are computed lazily from guest time: a flag is set if its event (periodic
tick, update, alarm match) happened since the last read of C. Timers exist only while an
enabled flag could raise IRQ 8 and the line is not already asserted, so an RTC without
interrupts enabled never arms a timer.

Left out: the divider bits of register A are stored but never stop the time base (the chip
would hold its divider in reset for DV = 11x); the daylight-saving bit (B.DSE) is stored and
ignored (the clock runs in UTC); the square-wave output pin (B.SQWE) drives nothing on a PC.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Callable

from vtemu.devices.bus import IrqLine
from vtemu.machine.clock import NS_PER_SECOND, GuestClock, Timer
from vtemu.machine.layout import CONVENTIONAL_RAM_END, KiB, MiB

DEFAULT_EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
NVRAM_SIZE = 128

INDEX_PORT = 0
DATA_PORT = 1
NMI_DISABLE = 0x80

# Register indexes ("Address Map").
SECONDS, SECONDS_ALARM = 0x00, 0x01
MINUTES, MINUTES_ALARM = 0x02, 0x03
HOURS, HOURS_ALARM = 0x04, 0x05
DAY_OF_WEEK = 0x06
DAY_OF_MONTH = 0x07
MONTH = 0x08
YEAR = 0x09
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
CENTURY = 0x32          # IBM PC/AT convention; not part of the MC146818 itself
TIME_REGISTERS = (SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR, CENTURY)
ALARM_REGISTERS = (SECONDS_ALARM, MINUTES_ALARM, HOURS_ALARM)

# CMOS memory-size bytes, as QEMU's pc_cmos_init() writes them and SeaBIOS reads them.
BASE_MEMORY_LO, BASE_MEMORY_HI = 0x15, 0x16
EXTENDED_MEMORY_LO, EXTENDED_MEMORY_HI = 0x17, 0x18
EXTENDED_MEMORY_POST_LO, EXTENDED_MEMORY_POST_HI = 0x30, 0x31
MEMORY_ABOVE_16M_LO, MEMORY_ABOVE_16M_HI = 0x34, 0x35

# Register A.
A_UIP = 0x80
A_DIVIDER_MASK = 0x70
A_RATE_MASK = 0x0F
A_RESET_VALUE = 0x26    # DV = 010 (32.768 kHz time base), RS = 0110 (1024 Hz)
# Register B.
B_SET = 0x80
B_PIE = 0x40
B_AIE = 0x20
B_UIE = 0x10
B_SQWE = 0x08
B_BINARY = 0x04         # DM: 1 = binary, 0 = BCD
B_24_HOUR = 0x02
B_DSE = 0x01
B_RESET_VALUE = B_24_HOUR   # what PC BIOSes (and QEMU) leave: 24-hour BCD
# Register C.
C_IRQF = 0x80
C_PF = 0x40
C_AF = 0x20
C_UF = 0x10
# Register D.
D_VRT = 0x80            # valid RAM and time: the battery is good

UIP_WINDOW_NS = 244_000
TIME_BASE_HZ = 32_768
ALARM_DONT_CARE = 0xC0  # alarm bytes 11xxxxxx match any value ("Alarm" description)
HOUR_PM = 0x80
SECONDS_PER_DAY = 86_400
UNDRIVEN_BUS = 0xFF     # the index port is write-only


@dataclass(frozen=True)
class _Fields:
    """The calendar registers as numbers, possibly out of range while the guest sets them."""

    year: int
    month: int
    day: int
    hour: int
    minute: int
    second: int

    @classmethod
    def of(cls, moment: datetime) -> _Fields:
        return cls(moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)

    def normalized(self) -> datetime:
        """The nearest real date: the chip would count on from garbage, a datetime cannot."""
        year = min(max(self.year, 1), 9999)
        month = min(max(self.month, 1), 12)
        day = min(max(self.day, 1), calendar.monthrange(year, month)[1])
        return datetime(year, month, day, min(max(self.hour, 0), 23),
                        min(max(self.minute, 0), 59), min(max(self.second, 0), 59))


def cmos_memory_bytes(ram_size: int) -> dict[int, int]:
    """The memory-size bytes QEMU's pc_cmos_init() stores for this much RAM below 4 GiB."""
    base_kib = min(ram_size // KiB, CONVENTIONAL_RAM_END // KiB)
    extended_kib = min(max(ram_size - 1 * MiB, 0) // KiB, 0xFFFF)
    above_16m = min(max(ram_size - 16 * MiB, 0) // (64 * KiB), 0xFFFF)
    pairs = ((BASE_MEMORY_LO, base_kib), (EXTENDED_MEMORY_LO, extended_kib),
             (EXTENDED_MEMORY_POST_LO, extended_kib), (MEMORY_ABOVE_16M_LO, above_16m))
    values: dict[int, int] = {}
    for low_index, value in pairs:
        values[low_index] = value & 0xFF
        values[low_index + 1] = value >> 8
    return values


def _next_tod_match(tod: int, hours: list[int], minutes: list[int], seconds: list[int]) -> int:
    """Smallest time of day >= tod (possibly in the next day, so < 2 days) whose fields are
    all allowed; every list must be non-empty."""
    hour0, rest = divmod(tod, 3600)
    minute0, second0 = divmod(rest, 60)
    for hour in sorted(hours + [h + 24 for h in hours]):
        if hour < hour0:
            continue
        first_minute = minute0 if hour == hour0 else 0
        for minute in (m for m in minutes if m >= first_minute):
            first_second = second0 if (hour, minute) == (hour0, minute0) else 0
            second = next((s for s in seconds if s >= first_second), None)
            if second is not None:
                return hour * 3600 + minute * 60 + second
    raise AssertionError("a non-empty pattern always matches within two days")


class CmosRtc:
    """The PC's CMOS/RTC at 70h/71h: index (bit 7 = NMI disable) and data, IRQ 8."""

    def __init__(self, clock: GuestClock, irq8: IrqLine, ram_size: int,
                 epoch: datetime = DEFAULT_EPOCH) -> None:
        self._clock = clock
        self._irq = irq8
        self._irq_level = False
        self._timer: Timer | None = None
        self._nvram = bytearray(NVRAM_SIZE)
        for index, value in cmos_memory_bytes(ram_size).items():
            self._nvram[index] = value
        self._index = 0
        self._nmi_disabled = False
        self._reg_a = A_RESET_VALUE
        self._reg_b = B_RESET_VALUE
        self._flags = 0                         # PF/AF/UF seen since the last read of C
        self._flags_since_ns = 0
        # A naive epoch is taken as UTC: the host's time zone must not leak into the guest.
        aware = epoch if epoch.tzinfo is not None else epoch.replace(tzinfo=timezone.utc)
        self._epoch = aware.astimezone(timezone.utc).replace(tzinfo=None)
        self._offset_s = 0                      # guest-set time minus epoch + guest seconds
        self._frozen: _Fields | None = None     # the registers while B.SET inhibits updates
        self._weekday_adjust = 0                # day of week as the guest set it, mod 7

    # --- port I/O ----------------------------------------------------------------------------
    @property
    def nmi_disabled(self) -> bool:
        return self._nmi_disabled

    @property
    def index(self) -> int:
        return self._index

    def io_read(self, offset: int, size: int) -> int:
        if offset == INDEX_PORT:
            return UNDRIVEN_BUS
        return self._read_register(self._index)

    def io_write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == INDEX_PORT:
            self._index = value & 0x7F
            self._nmi_disabled = bool(value & NMI_DISABLE)
        else:
            self._write_register(self._index, value)

    def _read_register(self, index: int) -> int:
        if index in TIME_REGISTERS:
            return self._read_time(index, self._clock.now_ns())
        if index == REG_A:
            return self._reg_a | (A_UIP if self._update_in_progress(self._clock.now_ns()) else 0)
        if index == REG_B:
            return self._reg_b
        if index == REG_C:
            return self._read_reg_c()
        if index == REG_D:
            return D_VRT
        return self._nvram[index]

    def _write_register(self, index: int, value: int) -> None:
        if index in TIME_REGISTERS:
            self._write_time(index, value)
        elif index == REG_A:
            self._write_reg_a(value)
        elif index == REG_B:
            self._write_reg_b(value)
        elif index in (REG_C, REG_D):
            pass                                # read-only
        else:
            self._nvram[index] = value
            if index in ALARM_REGISTERS:
                self._change(lambda: None)

    # --- time of day -------------------------------------------------------------------------
    def _seconds_at(self, ns: int) -> int:
        """Guest-visible seconds since the epoch at guest time ns (updates running)."""
        return self._offset_s + ns // NS_PER_SECOND

    def _fields_at(self, ns: int) -> _Fields:
        if self._frozen is not None:
            return self._frozen
        return _Fields.of(self._epoch + timedelta(seconds=self._seconds_at(ns)))

    def _update_in_progress(self, ns: int) -> bool:
        if self._reg_b & B_SET:
            return False                        # SET aborts and inhibits update cycles
        return ns % NS_PER_SECOND >= NS_PER_SECOND - UIP_WINDOW_NS

    def _encode(self, value: int) -> int:
        # Out-of-range values (garbage the guest wrote under SET) still fit the 8-bit register.
        value %= 0x100 if self._reg_b & B_BINARY else 100
        return value if self._reg_b & B_BINARY else ((value // 10) << 4) | (value % 10)

    def _decode(self, raw: int) -> int:
        return raw if self._reg_b & B_BINARY else (raw >> 4) * 10 + (raw & 0x0F)

    def _encode_hour(self, hour: int) -> int:
        if self._reg_b & B_24_HOUR:
            return self._encode(hour)
        # 12-hour mode: 1-12 with bit 7 set for PM; midnight is 12 AM ("Time, Calendar and
        # Alarm Data Modes").
        return self._encode(hour % 12 or 12) | (HOUR_PM if hour >= 12 else 0)

    def _decode_hour(self, raw: int) -> int:
        if self._reg_b & B_24_HOUR:
            return self._decode(raw)
        return self._decode(raw & ~HOUR_PM) % 12 + (12 if raw & HOUR_PM else 0)

    @staticmethod
    def _days_since_sunday(fields: _Fields) -> int:
        return (fields.normalized().weekday() + 1) % 7

    def _weekday(self, fields: _Fields) -> int:
        """Day of week 1-7, Sunday = 1 (the PC convention). The chip counts it independently
        of the date, so a value the guest writes sticks and advances with the days."""
        return (self._days_since_sunday(fields) + self._weekday_adjust) % 7 + 1

    def _read_time(self, index: int, ns: int) -> int:
        fields = self._fields_at(ns)
        if index == HOURS:
            return self._encode_hour(fields.hour)
        if index == DAY_OF_WEEK:
            return self._encode(self._weekday(fields))
        value = {SECONDS: fields.second, MINUTES: fields.minute, DAY_OF_MONTH: fields.day,
                 MONTH: fields.month, YEAR: fields.year % 100, CENTURY: fields.year // 100}[index]
        return self._encode(value)

    def _write_time(self, index: int, raw: int) -> None:
        # Values are decoded in the current format (B.DM, B.24/12). The datasheet asks for
        # B.SET while the time is set; without it each write takes effect at once, and an
        # impossible intermediate date (31 February) is clamped to a real one.
        ns = self._clock.now_ns()
        self._collect_flags(ns)
        fields = self._fields_at(ns)
        if index == DAY_OF_WEEK:
            self._weekday_adjust = (self._decode(raw) - 1 - self._days_since_sunday(fields)) % 7
            return
        fields = self._with_field(fields, index, raw)
        if self._frozen is not None:
            self._frozen = fields
        else:
            self._set_running_time(fields, ns)
        self._refresh(ns)

    def _with_field(self, fields: _Fields, index: int, raw: int) -> _Fields:
        if index == HOURS:
            return replace(fields, hour=self._decode_hour(raw))
        value = self._decode(raw)
        if index == YEAR:
            return replace(fields, year=fields.year // 100 * 100 + value)
        if index == CENTURY:
            return replace(fields, year=value * 100 + fields.year % 100)
        name = {SECONDS: "second", MINUTES: "minute", DAY_OF_MONTH: "day", MONTH: "month"}[index]
        return replace(fields, **{name: value})

    def _set_running_time(self, fields: _Fields, ns: int) -> None:
        """Resume counting from `fields` at guest time ns; seconds stay aligned to guest time."""
        target = int((fields.normalized() - self._epoch).total_seconds())
        self._offset_s = target - ns // NS_PER_SECOND

    def _write_reg_a(self, value: int) -> None:
        def store() -> None:
            self._reg_a = value & ~A_UIP        # UIP is read-only
        self._change(store)

    def _write_reg_b(self, value: int) -> None:
        if value & B_SET:
            value &= ~B_UIE                     # "UIE is cleared when SET goes high"
        ns = self._clock.now_ns()
        self._collect_flags(ns)
        setting, was_setting = bool(value & B_SET), bool(self._reg_b & B_SET)
        if setting and not was_setting:
            self._frozen = self._fields_at(ns)
        elif was_setting and not setting and self._frozen is not None:
            frozen, self._frozen = self._frozen, None
            self._set_running_time(frozen, ns)
        self._reg_b = value
        self._refresh(ns)

    # --- flags and IRQ 8 ---------------------------------------------------------------------
    def _periodic_after(self, ns: int) -> int | None:
        """Time of the first periodic-interrupt tick after ns (register A rate select)."""
        rate = self._reg_a & A_RATE_MASK
        if rate == 0:
            return None
        if rate < 3:
            rate += 7                           # RS 1, 2 repeat RS 8, 9 at 32.768 kHz
        period_num = NS_PER_SECOND << (rate - 1)   # period = period_num / TIME_BASE_HZ ns
        k = ns * TIME_BASE_HZ // period_num + 1
        return -(-k * period_num // TIME_BASE_HZ)

    def _update_after(self, ns: int) -> int | None:
        if self._reg_b & B_SET:
            return None
        return (ns // NS_PER_SECOND + 1) * NS_PER_SECOND

    def _alarm_pattern(self) -> tuple[list[int], list[int], list[int]] | None:
        """Allowed hours/minutes/seconds of the alarm, or None if it can never match."""
        def allowed(index: int, decode: Callable[[int], int], limit: int) -> list[int]:
            raw = self._nvram[index]
            if raw & ALARM_DONT_CARE == ALARM_DONT_CARE:
                return list(range(limit))
            value = decode(raw)
            return [value] if 0 <= value < limit else []
        pattern = (allowed(HOURS_ALARM, self._decode_hour, 24),
                   allowed(MINUTES_ALARM, self._decode, 60),
                   allowed(SECONDS_ALARM, self._decode, 60))
        return pattern if all(pattern) else None

    def _alarm_after(self, ns: int) -> int | None:
        pattern = self._alarm_pattern()
        if pattern is None or self._reg_b & B_SET:
            return None
        first_tick = ns // NS_PER_SECOND + 1    # guest second of the next update
        moment = self._epoch + timedelta(seconds=self._seconds_at(first_tick * NS_PER_SECOND))
        tod = moment.hour * 3600 + moment.minute * 60 + moment.second
        return (first_tick + _next_tod_match(tod, *pattern) - tod) * NS_PER_SECOND

    def _events(self) -> tuple[tuple[int, int, Callable[[int], int | None]], ...]:
        return ((C_PF, B_PIE, self._periodic_after), (C_AF, B_AIE, self._alarm_after),
                (C_UF, B_UIE, self._update_after))

    def _collect_flags(self, ns: int) -> None:
        """Fold events in (last collection, ns] into the flags; flags set whatever B enables."""
        since = self._flags_since_ns
        if ns <= since:
            return
        for flag, _, next_after in self._events():
            when = next_after(since)
            if when is not None and when <= ns:
                self._flags |= flag
        self._flags_since_ns = ns

    def _irqf(self) -> bool:
        return any(self._flags & flag and self._reg_b & enable for flag, enable, _ in self._events())

    def _read_reg_c(self) -> int:
        ns = self._clock.now_ns()
        self._collect_flags(ns)
        value = self._flags | (C_IRQF if self._irqf() else 0)
        self._flags = 0                         # read-to-clear, which also releases IRQ 8
        self._refresh(ns)
        return value

    def _change(self, mutate: Callable[[], None]) -> None:
        """Apply a register change with flags collected under the old settings first."""
        ns = self._clock.now_ns()
        self._collect_flags(ns)
        mutate()
        self._refresh(ns)

    def _refresh(self, ns: int) -> None:
        """Drive IRQ 8 from IRQF and arm a timer for the next event that could raise it."""
        self._clock.cancel(self._timer)
        self._timer = None
        level = self._irqf()
        if level != self._irq_level:
            self._irq_level = level
            self._irq.set_level(level)
        if level:
            return                              # the line stays up until C is read
        deadlines = [when for _, enable, next_after in self._events()
                     if self._reg_b & enable and (when := next_after(ns)) is not None]
        if deadlines:
            deadline = min(deadlines)
            self._timer = self._clock.schedule(deadline, lambda: self._on_timer(deadline))

    def _on_timer(self, deadline: int) -> None:
        self._timer = None
        self._collect_flags(deadline)
        self._refresh(deadline)
