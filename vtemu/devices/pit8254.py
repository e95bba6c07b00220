"""Intel 8254 programmable interval timer (Intel 8254 datasheet, order 231164).

Counting is derived from guest time, never stepped: the PIT's CLK input is a free-running
1.193182 MHz clock, so clock edge k happens at guest time ceil(k * 1e9 / F) ns and the number
of edges up to time t is t * F // 1e9 (integers only, so no drift). A counter's count and
OUT level at any tick follow in closed form from the count it was loaded with and the tick it
was loaded on; a counter that nothing watches costs nothing. Only counter 0 has a wire (IRQ
0): for it the next OUT transition is armed as a GuestClock timer, re-armed on every
reprogramming, so the IRQ line's level is exact at every edge.

Gates: counters 0 and 1 have GATE tied high on the PC. Counter 2's gate (port 61h bit 0) is
not modelled and is also high, so modes 1 and 5, which start counting only on a gate rising
edge, are accepted but never trigger: OUT stays high and the count stays at its initial value.

Reset state: counters are idle (no count loaded, OUT low) until programmed, so an unused PIT
never makes the guest clock live. QEMU instead starts every counter in mode 3 with count
65536 at reset; firmware that wants QEMU's post-BIOS state programs counter 0 itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from vtemu.devices.bus import IrqLine
from vtemu.machine.clock import NS_PER_SECOND, GuestClock, Timer
from vtemu.machine.layout import PIT_FREQUENCY_HZ

CONTROL_WORD = 3
COUNTERS = 3

# Control word fields ("Control Word Format").
SC_READ_BACK = 3
RW_LATCH = 0
RW_LSB = 1
RW_MSB = 2
RW_LSB_MSB = 3
# Read-back command ("Read-Back Command"): bits are active low for COUNT and STATUS.
READ_BACK_NO_COUNT = 0x20
READ_BACK_NO_STATUS = 0x10
# Status byte ("Status Byte").
STATUS_OUTPUT = 0x80
STATUS_NULL_COUNT = 0x40

UNDRIVEN_BUS = 0xFF     # reading A1A0 = 11 is a no-op with the data bus 3-stated


def tick_at(ns: int) -> int:
    """Number of PIT clock edges in (0, ns]."""
    return ns * PIT_FREQUENCY_HZ // NS_PER_SECOND


def ns_of_tick(tick: int) -> int:
    """The first guest nanosecond at which clock edge `tick` has happened."""
    return -(-tick * NS_PER_SECOND // PIT_FREQUENCY_HZ)


def _from_bcd(raw: int) -> int:
    return sum(((raw >> (4 * digit)) & 0xF) * 10**digit for digit in range(4))


def _to_bcd(value: int) -> int:
    return sum((value // 10**digit % 10) << (4 * digit) for digit in range(4))


# --- closed-form counter modes ------------------------------------------------------------------
# Each mode maps (e, n) -> value, where e >= 0 is the number of clock edges since the phase
# origin of a count of n (1..65536, or 1..10000 in BCD). The CE holds n at e = 0.

def _one_shot_out(mode: int, e: int, n: int) -> bool:
    if mode == 0:
        return e >= n                      # OUT goes high at terminal count and stays high
    return e != n                          # mode 4: strobes low for one clock at terminal count


def _one_shot_next(mode: int, e: int, n: int) -> int | None:
    if e < n:
        return n - e
    if mode == 4 and e == n:
        return 1
    return None                            # the CE wraps and keeps counting, OUT stays put


def _rate_out(e: int, n: int) -> bool:
    return n < 2 or e % n != n - 1        # mode 2: low for the one clock at count 1


def _rate_next(e: int, n: int) -> int | None:
    if n < 2:
        return None                        # a count of 1 is illegal in mode 2: no pulses
    phase = e % n
    return n - 1 - phase if phase < n - 1 else 1


def _square_high_clocks(n: int) -> int:
    return (n + 1) // 2                    # odd n: high (n+1)/2, low (n-1)/2 clocks


def _square_out(e: int, n: int) -> bool:
    return e % n < _square_high_clocks(n)


def _square_next(e: int, n: int) -> int | None:
    if n < 2:
        return None
    phase, high = e % n, _square_high_clocks(n)
    return high - phase if phase < high else n - phase


def _square_count(e: int, n: int) -> int:
    # Even n: loaded with n, decremented by two. Odd n: loaded with n-1, decremented by two,
    # reaching 0 one clock before OUT falls (datasheet, Mode 3 "Odd counts").
    phase, high = e % n, _square_high_clocks(n)
    step = phase if phase < high else phase - high
    start = n if n % 2 == 0 else n - 1
    return start - 2 * step


def _mode_out(mode: int, e: int, n: int) -> bool:
    if mode in (0, 4):
        return _one_shot_out(mode, e, n)
    if mode == 2:
        return _rate_out(e, n)
    return _square_out(e, n)


def _mode_next(mode: int, e: int, n: int) -> int | None:
    """Clock edges from e until OUT next changes."""
    if mode in (0, 4):
        return _one_shot_next(mode, e, n)
    if mode == 2:
        return _rate_next(e, n)
    return _square_next(e, n)


def _mode_count(mode: int, e: int, n: int) -> int:
    if mode == 2:
        return n - e % n
    if mode == 3:
        return _square_count(e, n)
    return n - e                           # modes 0/4: reduced modulo the counter width


@dataclass(frozen=True)
class _Load:
    """A count in the CE: n loaded at tick `load`, with cycle phase measured from `origin`."""

    n: int
    origin: int
    load: int


class _Counter:
    """One of the three counters; `out_line` is the wire on OUT, if any."""

    def __init__(self, clock: GuestClock, out_line: IrqLine | None) -> None:
        self._clock = clock
        self._line = out_line
        self.mode = 0
        self._mode_bits = 0
        self.access = RW_LSB_MSB
        self.bcd = False
        self._running: _Load | None = None
        self._next: _Load | None = None       # modes 2/3: count waiting for the cycle to end
        self._held = 0                        # count reported while nothing is counting
        self._loaded_at: int | None = None    # CR -> CE transfer tick; None: Null Count
        self._write_lsb: int | None = None    # write flip-flop: LSB of a two-byte count
        self._read_msb = False                # read flip-flop
        self._count_latch: int | None = None
        self._status_latch: int | None = None
        self._driven = False                  # the level OUT last drove on the line
        self._driven_tick = 0
        self._timer: Timer | None = None

    # --- closed-form state at a tick -----------------------------------------------------------
    @property
    def _modulus(self) -> int:
        return 10_000 if self.bcd else 0x10000

    def _load_at(self, tick: int) -> _Load | None:
        if self._next is not None and tick >= self._next.load:
            return self._next
        return self._running

    def out(self, tick: int) -> bool:
        load = self._load_at(tick)
        if load is None or tick < load.load:
            return self.mode != 0             # OUT's state after the control word
        return _mode_out(self.mode, tick - load.origin, load.n)

    def _value(self, tick: int) -> int:
        """The CE contents as a number (before BCD encoding)."""
        load = self._load_at(tick)
        if load is None:
            return self._held
        if tick < load.load:
            # The CE is loaded on the next CLK edge; until then report the count written.
            return load.n % self._modulus
        return _mode_count(self.mode, tick - load.origin, load.n) % self._modulus

    def count(self, tick: int) -> int:
        """The count as the guest reads it."""
        value = self._value(tick)
        return _to_bcd(value) if self.bcd else value

    def null_count(self, tick: int) -> bool:
        return self._loaded_at is None or tick < self._loaded_at

    def next_transition(self, tick: int) -> int | None:
        """The first tick after `tick` at which OUT changes."""
        load = self._load_at(tick)
        if load is None:
            return None
        start = max(tick, load.load)
        steps = _mode_next(self.mode, start - load.origin, load.n)
        candidate = None if steps is None else start + steps
        pending = self._next
        if pending is not None and tick < pending.load and (candidate is None or candidate >= pending.load):
            if self.out(pending.load) != self.out(tick):
                return pending.load
            return self.next_transition(pending.load)
        return candidate

    # --- programming -------------------------------------------------------------------------
    def write_control(self, tick: int, mode_bits: int, access: int, bcd: bool) -> None:
        """Mode set: control logic reset, OUT to its initial state, Null Count set."""
        self._held = self._value(tick)        # the CE stops where it was
        self._running = self._next = None
        self._loaded_at = None
        self._mode_bits = mode_bits
        self.mode = mode_bits - 4 if mode_bits >= 6 else mode_bits   # 110/111 alias modes 2/3
        self.access = access
        self.bcd = bcd
        self._held %= self._modulus
        self._write_lsb = None
        self._read_msb = False
        self._count_latch = self._status_latch = None

    def write_byte(self, tick: int, value: int) -> None:
        if self.access == RW_LSB:
            self._write_count(tick, value)
        elif self.access == RW_MSB:
            self._write_count(tick, value << 8)
        elif self._write_lsb is None:
            self._write_lsb = value
            if self.mode == 0:
                # Mode 0: the first byte stops counting and drives OUT low at once.
                self._held = self._value(tick)
                self._running = self._next = None
        else:
            self._write_count(tick, self._write_lsb | value << 8)
            self._write_lsb = None

    def _write_count(self, tick: int, raw: int) -> None:
        n = (_from_bcd(raw) if self.bcd else raw) or self._modulus   # 0 means 2^16 / 10^4
        if self.mode in (1, 5):
            self._held = n % self._modulus    # waits for a gate trigger that never comes
            return
        if self.mode in (2, 3) and self._running is not None and tick >= self._running.load:
            self._queue_for_cycle_end(tick, n)
            return
        # "the initial count will be loaded on the next CLK pulse" (Modes 0, 2, 3, 4).
        self._running = _Load(n, tick + 1, tick + 1)
        self._next = None
        self._loaded_at = tick + 1

    def _queue_for_cycle_end(self, tick: int, n: int) -> None:
        """Modes 2/3: a new count waits for the end of the current period (mode 2) or
        half-cycle (mode 3) and does not disturb the current one."""
        if self._next is not None and tick >= self._next.load:
            self._running = self._next
        current = self._running
        assert current is not None
        e = tick - current.origin
        if self.mode == 2:
            boundary = current.origin + (e // current.n + 1) * current.n
            origin = boundary
        else:
            boundary = tick + (_square_next(e, current.n) or 1)
            falling = _square_out(e, current.n)
            # Starting a low half-cycle: place the phase origin so the boundary begins it.
            origin = boundary - _square_high_clocks(n) if falling else boundary
        self._next = _Load(n, origin, boundary)
        self._loaded_at = boundary

    # --- latching and reading -----------------------------------------------------------------
    def latch_count(self, tick: int) -> None:
        if self._count_latch is None:          # a second latch before the read is ignored
            self._count_latch = self.count(tick)

    def latch_status(self, tick: int) -> None:
        if self._status_latch is None:
            status = (self.access << 4) | (self._mode_bits << 1) | int(self.bcd)
            if self.out(tick):
                status |= STATUS_OUTPUT
            if self.null_count(tick):
                status |= STATUS_NULL_COUNT
            self._status_latch = status

    def read_byte(self, tick: int) -> int:
        if self._status_latch is not None:     # status comes before a latched count
            status, self._status_latch = self._status_latch, None
            return status
        value = self._count_latch if self._count_latch is not None else self.count(tick)
        if self.access == RW_LSB:
            byte, done = value & 0xFF, True
        elif self.access == RW_MSB:
            byte, done = value >> 8, True
        else:
            byte, done = (value >> 8, True) if self._read_msb else (value & 0xFF, False)
            self._read_msb = not self._read_msb
        if done:
            self._count_latch = None
        return byte

    # --- the OUT wire --------------------------------------------------------------------------
    def begin_change(self, tick: int) -> None:
        """Bring the wire up to `tick` under the old programming before it changes."""
        self._advance_wire(tick)

    def end_change(self, tick: int) -> None:
        """Drive OUT as the new programming says and arm its next transition."""
        self._drive(self.out(tick))
        self._driven_tick = tick
        self._arm(tick)

    def _drive(self, level: bool) -> None:
        if self._line is not None and level != self._driven:
            self._driven = level
            self._line.set_level(level)

    def _advance_wire(self, tick: int) -> None:
        # Replay transitions the wire has not shown yet (a timer that was due but had not run
        # when the guest reprogrammed). Past one full cycle more replays could only re-latch
        # the same edge-triggered IRR bit, so stop after two and settle on the final level.
        for _ in range(2):
            transition = self.next_transition(self._driven_tick)
            if transition is None or transition > tick:
                break
            self._drive(self.out(transition))
            self._driven_tick = transition
        self._drive(self.out(tick))
        self._driven_tick = max(self._driven_tick, tick)

    def _arm(self, tick: int) -> None:
        if self._line is None:
            return
        self._clock.cancel(self._timer)
        self._timer = None
        transition = self.next_transition(tick)
        if transition is not None:
            self._timer = self._clock.schedule(ns_of_tick(transition), self._timer_callback(transition))

    def _timer_callback(self, transition: int) -> Callable[[], None]:
        def fire() -> None:
            self._timer = None
            self._advance_wire(transition)
            self._arm(transition)
        return fire


class Pit8254:
    """The PC's 8254: counters at offsets 0-2, control word at 3; counter 0 OUT drives IRQ 0."""

    def __init__(self, clock: GuestClock, irq0: IrqLine) -> None:
        self._clock = clock
        self.counters = [_Counter(clock, irq0), _Counter(clock, None), _Counter(clock, None)]

    def _tick(self) -> int:
        return tick_at(self._clock.now_ns())

    def io_read(self, offset: int, size: int) -> int:
        if offset == CONTROL_WORD:
            return UNDRIVEN_BUS
        return self.counters[offset].read_byte(self._tick())

    def io_write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        tick = self._tick()
        if offset == CONTROL_WORD:
            self._write_control_word(tick, value)
            return
        counter = self.counters[offset]
        counter.begin_change(tick)
        counter.write_byte(tick, value)
        counter.end_change(tick)

    def _write_control_word(self, tick: int, value: int) -> None:
        select, access = value >> 6, (value >> 4) & 3
        if select == SC_READ_BACK:
            self._read_back(tick, value)
        elif access == RW_LATCH:
            self.counters[select].latch_count(tick)
        else:
            counter = self.counters[select]
            counter.begin_change(tick)
            counter.write_control(tick, (value >> 1) & 7, access, bool(value & 1))
            counter.end_change(tick)

    def _read_back(self, tick: int, value: int) -> None:
        for index, counter in enumerate(self.counters):
            if not value & (2 << index):
                continue
            if not value & READ_BACK_NO_STATUS:
                counter.latch_status(tick)
            if not value & READ_BACK_NO_COUNT:
                counter.latch_count(tick)
