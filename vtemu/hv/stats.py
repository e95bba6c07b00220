"""Per-reason VM-exit counters and handling times, with breakdowns by port, MSR, leaf, CR, vector."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field


@dataclass
class ReasonStats:
    count: int = 0
    total_ns: int = 0
    min_ns: int = 0
    max_ns: int = 0
    breakdown: Counter[str] = field(default_factory=Counter)

    def add(self, elapsed_ns: int, detail: str | None) -> None:
        if self.count == 0 or elapsed_ns < self.min_ns:
            self.min_ns = elapsed_ns
        self.max_ns = max(self.max_ns, elapsed_ns)
        self.count += 1
        self.total_ns += elapsed_ns
        if detail is not None:
            self.breakdown[detail] += 1

    @property
    def mean_ns(self) -> float:
        return self.total_ns / self.count if self.count else 0.0


class ExitStats:
    """Keyed by (vCPU, reason name) so per-vCPU and merged tables come from one structure."""

    def __init__(self) -> None:
        self.by_reason: dict[tuple[int, str], ReasonStats] = defaultdict(ReasonStats)
        self.reason_numbers: dict[str, int] = {}

    def record(self, vcpu: int, reason: str, number: int, elapsed_ns: int,
               detail: str | None = None) -> None:
        self.reason_numbers[reason] = number
        self.by_reason[vcpu, reason].add(elapsed_ns, detail)

    def merged(self) -> dict[str, ReasonStats]:
        merged: dict[str, ReasonStats] = defaultdict(ReasonStats)
        for (_, reason), stats in self.by_reason.items():
            target = merged[reason]
            if target.count == 0 or stats.min_ns < target.min_ns:
                target.min_ns = stats.min_ns
            target.max_ns = max(target.max_ns, stats.max_ns)
            target.count += stats.count
            target.total_ns += stats.total_ns
            target.breakdown.update(stats.breakdown)
        return dict(merged)

    @property
    def total(self) -> int:
        return sum(stats.count for stats in self.by_reason.values())

    def counts(self) -> dict[str, int]:
        return {reason: stats.count for reason, stats in self.merged().items()}
