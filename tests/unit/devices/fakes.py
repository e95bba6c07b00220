"""Test doubles for device wiring: IRQ lines that record what devices drive on them."""

from __future__ import annotations

from vtemu.machine.clock import GuestClock


class RecordingLine:
    """An IrqLine remembering every level driven on it (low before the first call)."""

    def __init__(self) -> None:
        self.levels: list[bool] = []

    def set_level(self, level: bool) -> None:
        self.levels.append(level)

    @property
    def level(self) -> bool:
        return self.levels[-1] if self.levels else False

    @property
    def rising_edges(self) -> int:
        previous, edges = False, 0
        for level in self.levels:
            edges += level and not previous
            previous = level
        return edges


class TimedLine(RecordingLine):
    """A RecordingLine that also notes the guest time of each change."""

    def __init__(self, clock: GuestClock) -> None:
        super().__init__()
        self._clock = clock
        self.events: list[tuple[int, bool]] = []

    def set_level(self, level: bool) -> None:
        super().set_level(level)
        self.events.append((self._clock.peek_ns(), level))


def advance_to(clock: GuestClock, ns: int) -> None:
    """Run the guest up to guest time ns, then fire whatever timers fell due (the run loop's job)."""
    assert ns >= clock.peek_ns(), "guest time only moves forward"
    clock.retire(ns - clock.peek_ns())
    clock.run_due_timers()
