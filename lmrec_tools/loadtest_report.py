"""Latency accounting and reports for `lmrec loadtest`.

Every call lands in one HDR histogram (microseconds, 1 µs..60 s, 3 significant digits) whatever its
outcome, so error latencies are not hidden from the percentiles. The JSON report follows the shape of
ghz's (https://ghz.sh/docs/output): durations are integer **nanoseconds** (`total`, `average`,
`fastest`, `slowest`, `latencyDistribution[].latency`), histogram marks are **seconds**, `rps` is
completed calls per second of wall time.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES = (10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9)
HISTOGRAM_BUCKETS = 10
# Distinct error messages kept verbatim; the rest are lumped together so a run with a failing
# dependency does not produce a report with thousands of near-identical keys.
MAX_ERROR_MESSAGES = 20
MAX_ERROR_MESSAGE_CHARS = 200

OK = "OK"
# Status recorded for a send the client refused because too many calls were already in flight. It is
# not a grpc.StatusCode name on purpose: the server never saw the request.
CLIENT_INFLIGHT_CAP = "CLIENT_INFLIGHT_CAP"


class LatencyRecorder:
    """Collects one latency and one outcome per call."""

    def __init__(self) -> None:
        self.histogram = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        self.status_counts: Counter[str] = Counter()
        self.error_messages: Counter[str] = Counter()
        self.degraded = 0
        self.clamped = 0
        self._sum_us = 0
        self._min_us: int | None = None
        self._max_us: int | None = None

    def record(self, latency_us: float, status: str = OK, *, degraded: bool = False, message: str = "") -> None:
        """Records one call; `latency_us` outside 1 µs..60 s is clamped (and counted in `clamped`)."""
        value = int(round(latency_us))
        if value < LOWEST_US or value > HIGHEST_US:
            self.clamped += 1
            value = min(max(value, LOWEST_US), HIGHEST_US)
        if not self.histogram.record_value(value):
            raise ValueError(f"HDR histogram refused {value} µs")
        self.status_counts[status] += 1
        if degraded:
            self.degraded += 1
        if status != OK:
            self._record_error_message(status, message)
        self._sum_us += value
        self._min_us = value if self._min_us is None else min(self._min_us, value)
        self._max_us = value if self._max_us is None else max(self._max_us, value)

    def _record_error_message(self, status: str, message: str) -> None:
        key = f"{status}: {message[:MAX_ERROR_MESSAGE_CHARS]}" if message else status
        if key in self.error_messages or len(self.error_messages) < MAX_ERROR_MESSAGES:
            self.error_messages[key] += 1
        else:
            self.error_messages["(other messages)"] += 1

    @property
    def count(self) -> int:
        return self.histogram.get_total_count()

    @property
    def errors(self) -> int:
        return self.count - self.status_counts.get(OK, 0)

    @property
    def mean_us(self) -> float:
        return self._sum_us / self.count if self.count else 0.0

    @property
    def min_us(self) -> int:
        return self._min_us or 0

    @property
    def max_us(self) -> int:
        return self._max_us or 0

    def percentile_us(self, percentile: float) -> int:
        """Value at `percentile` (0..100), to the histogram's precision; 0 when nothing was recorded."""
        if not self.count:
            return 0
        # HDR reports the top of a value's bucket, which can lie a hair above the exact maximum.
        return min(self.histogram.get_value_at_percentile(percentile), self.max_us)

    def buckets(self, n: int = HISTOGRAM_BUCKETS) -> list[tuple[float, int]]:
        """ghz-style linear buckets between fastest and slowest: (upper mark in µs, count) pairs."""
        if not self.count:
            return []
        low, high = self.min_us, self.max_us
        if high == low:
            return [(float(high), self.count)]
        width = (high - low) / n
        marks = [low + width * (i + 1) for i in range(n)]
        counts = [0] * n
        for item in self.histogram.get_recorded_iterator():
            # The HDR value is the bucket's representative; clamp it into range so rounding at the
            # edges cannot push a count outside [fastest, slowest].
            value = min(max(item.value_iterated_to, low), high)
            index = min(int((value - low) / width), n - 1)
            counts[index] += item.count_at_value_iterated_to
        return list(zip(marks, counts))


@dataclass
class LoadReport:
    """Outcome of one load run; `recorder` holds the per-call data."""

    target: str
    mode: str  # "open-loop" or "closed-loop"
    recorder: LatencyRecorder
    elapsed_s: float
    offered_rate: float | None = None
    concurrency: int | None = None
    scheduled: int = 0
    max_send_lag_s: float = 0.0
    options: dict = field(default_factory=dict)
    # When the clock started (ghz's `date`); None for reports built without a run.
    started_at: datetime.datetime | None = None

    @property
    def count(self) -> int:
        return self.recorder.count

    @property
    def errors(self) -> int:
        return self.recorder.errors

    @property
    def degraded(self) -> int:
        return self.recorder.degraded

    @property
    def status_counts(self) -> dict[str, int]:
        return dict(self.recorder.status_counts)

    @property
    def rps(self) -> float:
        """Completed calls per second. An open-loop run spans at least its schedule (`scheduled / rate`),
        so a short run is not credited with the gap between its last send and the schedule's end."""
        span = self.elapsed_s
        if self.offered_rate:
            span = max(span, self.scheduled / self.offered_rate)
        return self.count / span if span > 0 else 0.0

    def percentile_ms(self, percentile: float) -> float:
        return self.recorder.percentile_us(percentile) / 1000.0

    def latency_ms(self) -> dict[str, float]:
        """The headline numbers, in milliseconds."""
        r = self.recorder
        return {
            "p50": r.percentile_us(50) / 1000.0,
            "p90": r.percentile_us(90) / 1000.0,
            "p99": r.percentile_us(99) / 1000.0,
            "p99.9": r.percentile_us(99.9) / 1000.0,
            "max": r.max_us / 1000.0,
            "mean": r.mean_us / 1000.0,
        }

    def to_json_dict(self) -> dict:
        r = self.recorder
        return {
            "date": self.started_at.isoformat(timespec="seconds") if self.started_at else None,
            "target": self.target,
            "mode": self.mode,
            "offeredRate": self.offered_rate,
            "concurrency": self.concurrency,
            "options": self.options,
            "count": self.count,
            "scheduled": self.scheduled,
            "total": int(self.elapsed_s * 1e9),
            "average": int(r.mean_us * 1000),
            "fastest": r.min_us * 1000,
            "slowest": r.max_us * 1000,
            "rps": self.rps,
            "errors": self.errors,
            "degraded": self.degraded,
            "clientInflightCapped": r.status_counts.get(CLIENT_INFLIGHT_CAP, 0),
            "maxSendLag": int(self.max_send_lag_s * 1e9),
            "latencyDistribution": [
                {"percentage": p, "latency": r.percentile_us(p) * 1000} for p in PERCENTILES
            ],
            "latencyMs": self.latency_ms(),
            "statusCodeDistribution": dict(sorted(r.status_counts.items())),
            "errorDistribution": dict(r.error_messages.most_common()),
            "histogram": [
                {"mark": mark / 1e6, "count": count, "frequency": count / self.count if self.count else 0.0}
                for mark, count in r.buckets()
            ],
            "units": {"durations": "ns", "histogramMark": "s", "latencyMs": "ms"},
        }

    def summary_text(self) -> str:
        if self.mode == "open-loop":
            how = f"open loop at {self.offered_rate:g} req/s offered"
        else:
            how = f"closed loop with {self.concurrency} concurrent callers"
        lat = self.latency_ms()
        lines = [
            f"lmrec loadtest: {how} against {self.target}",
            f"  calls      {self.count} in {self.elapsed_s:.2f} s ({self.rps:.1f} completed/s); "
            f"{self.count - self.errors} OK, {self.errors} errors, {self.degraded} degraded",
            "  latency    " + "  ".join(f"{k} {v:.2f} ms" for k, v in lat.items()),
            "  status     " + ", ".join(f"{code} {n}" for code, n in sorted(self.status_counts.items())),
        ]
        if self.mode == "open-loop":
            lines.append(f"  send lag   max {self.max_send_lag_s * 1000:.2f} ms behind schedule "
                         "(included in the latencies above)")
        for message, n in self.recorder.error_messages.most_common(5):
            lines.append(f"  error      {n} x {message}")
        lines.append("  histogram  (ms, linear buckets between fastest and slowest)")
        for mark, count in self.recorder.buckets():
            bar = "#" * (math.ceil(40 * count / self.count) if count else 0)
            lines.append(f"  {mark / 1000:10.2f} [{count:6d}] {bar}")
        return "\n".join(lines)


def describe_machine() -> dict[str, str]:
    """CPU model, core count, RAM and GPU (when nvidia-smi is present), for benchmark write-ups."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": str(os.cpu_count() or "?")}
    if shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                info["cpu"] = value.strip()
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, check=False).stdout.strip()
        if out:
            info["gpu"] = "; ".join(out.splitlines())
    info["os"] = f"{platform.system()} {platform.release()}"
    info["python"] = platform.python_version()
    return info
