"""One deadline budget per request, shared by every downstream stage."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from lmrec.errors import DeadlineExceeded


@dataclass
class Budget:
    deadline: float  # time.monotonic() value
    reserve_s: float = 0.0
    timings: list[tuple[str, float]] = field(default_factory=list)

    @classmethod
    def from_context(cls, time_remaining: float | None, default_s: float, reserve_s: float) -> "Budget":
        seconds = default_s if time_remaining is None else time_remaining
        return cls(time.monotonic() + seconds, reserve_s)

    def remaining(self) -> float:
        """Seconds a downstream call may take, keeping the reserve for assembling the answer."""
        return self.deadline - time.monotonic() - self.reserve_s

    def timeout(self, stage: str) -> float:
        left = self.remaining()
        if left <= 0:
            raise DeadlineExceeded(f"deadline budget exhausted before {stage}")
        return left

    def stage(self, name: str) -> "_Stage":
        return _Stage(self, name)


class _Stage:
    def __init__(self, budget: Budget, name: str) -> None:
        self.budget, self.name = budget, name

    def __enter__(self):
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.budget.timings.append((self.name, (time.perf_counter() - self.started) * 1000))
        return False
