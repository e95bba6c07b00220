"""Per-vCPU, per-reason VM-exit counters and handling times, with optional breakdowns.

The dispatcher records every exit's count and handling time (host clock) here; that is the
only per-exit cost when nobody asked for statistics, so `record` is kept to a dictionary
lookup and four integer updates. Breakdowns (by port, MSR, CPUID leaf, CR, vector, page...)
are fed only when requested, by vtemu.debug.breakdown, with keys that are any hashable
value (vtemu.debug.exitinfo.BreakdownKey); this module does not decode exits.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from vtemu.vmx.reasons import ExitReason

_NO_MIN = 1 << 63


@dataclass(slots=True)
class Timing:
    """Count and handling times (ns) of a set of exits."""

    count: int = 0
    total_ns: int = 0
    min_ns: int = _NO_MIN     # read through `minimum`, which is 0 for no exits
    max_ns: int = 0

    def add(self, elapsed_ns: int) -> None:
        self.count += 1
        self.total_ns += elapsed_ns
        if elapsed_ns < self.min_ns:
            self.min_ns = elapsed_ns
        if elapsed_ns > self.max_ns:
            self.max_ns = elapsed_ns

    def merge(self, other: Timing) -> None:
        self.count += other.count
        self.total_ns += other.total_ns
        self.min_ns = min(self.min_ns, other.min_ns)
        self.max_ns = max(self.max_ns, other.max_ns)

    @property
    def minimum_ns(self) -> int:
        return self.min_ns if self.count else 0

    @property
    def mean_ns(self) -> float:
        return self.total_ns / self.count if self.count else 0.0


@dataclass(slots=True)
class ReasonStats(Timing):
    """One exit reason: its timing and, when collected, a timing per breakdown key."""

    breakdown: dict[Hashable, Timing] = field(default_factory=dict)

    def add_breakdown(self, key: Hashable, elapsed_ns: int) -> None:
        timing = self.breakdown.get(key)
        if timing is None:
            timing = self.breakdown[key] = Timing()
        timing.add(elapsed_ns)

    def merge(self, other: Timing) -> None:
        Timing.merge(self, other)
        if isinstance(other, ReasonStats):
            for key, timing in other.breakdown.items():
                mine = self.breakdown.get(key)
                if mine is None:
                    mine = self.breakdown[key] = Timing()
                mine.merge(timing)


class ExitStats:
    """Keyed by (vCPU, reason) so per-vCPU and merged tables come from one structure."""

    def __init__(self) -> None:
        self.by_reason: dict[tuple[int, ExitReason], ReasonStats] = {}

    def record(self, vcpu: int, reason: ExitReason, elapsed_ns: int) -> None:
        """Every exit, from the dispatcher (the hot path: no method calls beyond this one)."""
        stats = self.by_reason.get((vcpu, reason))
        if stats is None:
            stats = self.by_reason[vcpu, reason] = ReasonStats()
        stats.count += 1
        stats.total_ns += elapsed_ns
        if elapsed_ns < stats.min_ns:
            stats.min_ns = elapsed_ns
        if elapsed_ns > stats.max_ns:
            stats.max_ns = elapsed_ns

    def record_breakdown(self, vcpu: int, reason: ExitReason, keys: Iterable[Hashable],
                         elapsed_ns: int) -> None:
        """The breakdown keys of an exit already `record`ed (each key gets the exit's time)."""
        for key in keys:
            self.breakdown_timing(vcpu, reason, key).add(elapsed_ns)

    def breakdown_timing(self, vcpu: int, reason: ExitReason, key: Hashable) -> Timing:
        """The timing a collector adds this key's exits to (created empty on first use)."""
        stats = self.by_reason.get((vcpu, reason))
        if stats is None:
            stats = self.by_reason[vcpu, reason] = ReasonStats()
        timing = stats.breakdown.get(key)
        if timing is None:
            timing = stats.breakdown[key] = Timing()
        return timing

    def vcpus(self) -> list[int]:
        return sorted({vcpu for vcpu, _ in self.by_reason})

    def for_vcpu(self, vcpu: int) -> dict[ExitReason, ReasonStats]:
        return {reason: stats for (index, reason), stats in self.by_reason.items() if index == vcpu}

    def merged(self) -> dict[ExitReason, ReasonStats]:
        """Every vCPU's statistics summed per reason (copies: the originals stay per vCPU)."""
        merged: dict[ExitReason, ReasonStats] = {}
        for (_, reason), stats in self.by_reason.items():
            target = merged.get(reason)
            if target is None:
                target = merged[reason] = ReasonStats()
            target.merge(stats)
        return merged

    @property
    def total(self) -> int:
        return sum(stats.count for stats in self.by_reason.values())

    def counts(self) -> dict[str, int]:
        """Exits per reason name, all vCPUs together."""
        return {reason.name: stats.count for reason, stats in self.merged().items()}
