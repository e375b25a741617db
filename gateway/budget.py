"""One deadline budget per request, shared by every downstream stage; each stage is timed, and traced as a
span of its own when tracing is on (lmrec/tracing.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from lmrec import tracing
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
        self._span_scope = tracing.span(f"recommend.{name}", {"lmrec.stage": name})

    def __enter__(self):
        self.span = self._span_scope.__enter__() if self._span_scope is not None else None
        self.started = time.perf_counter()
        return self

    def annotate(self, **attributes: Any) -> None:
        """Attributes of this stage's span (lmrec.<name>); nothing when tracing is off."""
        if self.span is not None:
            tracing.annotate({f"lmrec.{k}": v for k, v in attributes.items()}, self.span)

    def __exit__(self, *exc):
        self.budget.timings.append((self.name, (time.perf_counter() - self.started) * 1000))
        if self._span_scope is not None:
            self._span_scope.__exit__(*exc)
        return False
