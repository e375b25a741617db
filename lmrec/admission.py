"""How many calls of a method a process takes on at once: a fixed ceiling, and under it a limit that
adapts to the latency the calls see (gradient concurrency control, as Netflix's concurrency-limits and
Envoy's adaptive concurrency filter do).

Every `window` completions the limit moves by the gradient between the no-load latency and the window's
median: latency within `tolerance` times the no-load figure lets it grow (5% and one), latency past it
shrinks it in proportion (at most by half, smoothed). So past the knee the excess is refused at once
instead of queueing until every admitted call is slow, while on a bigger machine the limit stays as high
as that machine absorbs. It never goes below `floor`, so a modest burst of parallel callers is never
refused. The no-load latency is the lowest window median of the last one to two `memory_s` periods (a
sliding minimum), so a lasting change, such as a slower model, is learnt within that time.
"""

from __future__ import annotations

import statistics
import time


class AdaptiveLimit:
    def __init__(self, ceiling: int, tolerance: float = 3.0, floor: int = 8, window: int = 20,
                 memory_s: float = 60.0, clock=time.monotonic) -> None:
        self.ceiling, self.floor = ceiling, min(floor, ceiling)
        self.tolerance, self.window, self.memory_s = tolerance, window, memory_s
        self.limit = float(ceiling)
        self._samples: list[float] = []
        self._clock = clock
        # Sliding minimum over two periods: the previous one's and the current one's lowest median.
        self._previous_min: float | None = None
        self._current_min: float | None = None
        self._period_start = clock()

    @property
    def adaptive(self) -> bool:
        return self.tolerance > 0 and self.floor < self.ceiling

    @property
    def current(self) -> int:
        return max(self.floor, int(self.limit))

    @property
    def no_load_s(self) -> float | None:
        known = [m for m in (self._previous_min, self._current_min) if m is not None]
        return min(known) if known else None

    def observe(self, latency_s: float) -> None:
        if not self.adaptive:
            return
        self._samples.append(latency_s)
        if len(self._samples) < self.window:
            return
        median, self._samples = statistics.median(self._samples), []
        now = self._clock()
        if now - self._period_start > self.memory_s:
            self._previous_min, self._current_min, self._period_start = self._current_min, None, now
        self._current_min = median if self._current_min is None else min(self._current_min, median)
        gradient = self.tolerance * self.no_load_s / median
        if gradient >= 1.0:  # no queueing to speak of: grow
            limit = self.limit * 1.05 + 1.0
        else:
            limit = 0.8 * self.limit + 0.2 * max(0.5, gradient) * self.limit
        self.limit = min(float(self.ceiling), max(float(self.floor), limit))
