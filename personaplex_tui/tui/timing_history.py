"""Rolling statistics of step timings for the timing panel: percentiles, RTF, per-phase means."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from personaplex_tui.events import StepTiming

BUDGET_MS = 80.0  # one frame of audio: a step slower than this falls behind real time
PHASES: tuple[tuple[str, str], ...] = (
    ("encode_ms", "enc"),
    ("temporal_ms", "tmp"),
    ("depformer_ms", "dep"),
    ("decode_ms", "dec"),
)


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        return 0.0
    pos = (len(sorted_values) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


@dataclass(frozen=True)
class StepSummary:
    """What the panel shows: over the last `window` steps (of `count` seen in all)."""

    count: int
    window: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    mean_ms: float
    over_budget: int  # steps in the window slower than the budget
    phases_ms: tuple[tuple[str, float], ...]  # (short name, mean ms); empty if not measured

    @property
    def rtf(self) -> float:
        """Real-time factor: mean step time over the 80 ms a step may take (< 1 keeps up)."""
        return self.mean_ms / BUDGET_MS


class TimingHistory:
    """The last `window` step timings, plus a longer history of totals for the sparkline."""

    def __init__(self, window: int = 125, history: int = 400) -> None:
        self._window: deque[StepTiming] = deque(maxlen=window)
        self._history: deque[float] = deque(maxlen=history)
        self.count = 0

    def add(self, timings: Iterable[StepTiming]) -> None:
        for t in timings:
            self._window.append(t)
            self._history.append(t.total_ms)
            self.count += 1

    def clear(self) -> None:
        self._window.clear()
        self._history.clear()
        self.count = 0

    def recent(self, n: int) -> list[float]:
        """The last `n` step totals in ms, oldest first."""
        if n <= 0:
            return []
        return list(self._history)[-n:]

    def summary(self) -> StepSummary | None:
        if not self._window:
            return None
        totals = sorted(t.total_ms for t in self._window)
        n = len(totals)
        # The engine measures the phases on some steps only (each costs a few syncs): average
        # over the steps that have them.
        timed = [t for t in self._window if any(getattr(t, name) > 0 for name, _ in PHASES)]
        phases = (
            tuple(
                (label, sum(getattr(t, name) for t in timed) / len(timed)) for name, label in PHASES
            )
            if timed
            else ()
        )
        measured = bool(timed)
        return StepSummary(
            count=self.count,
            window=n,
            p50_ms=percentile(totals, 50),
            p95_ms=percentile(totals, 95),
            max_ms=totals[-1],
            mean_ms=sum(totals) / n,
            over_budget=sum(1 for ms in totals if ms > BUDGET_MS),
            phases_ms=phases if measured else (),
        )
