"""Prometheus metrics of the gateway: per-stage latency of Recommend and degraded answers by reason."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from lmrec.metrics_http import LATENCY_BUCKETS_S

# Bounded label values for `degraded`: the free-text reason goes to the client, the kind to Prometheus.
DEGRADED_KINDS = ("ranking_unavailable", "ranking_failed", "ranking_deadline", "retrieval_partial")


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.stage = Histogram("lmrec_gateway_stage_seconds", "Latency of one Recommend stage", ["stage"],
                               buckets=LATENCY_BUCKETS_S, registry=registry)
        self.recommend = Histogram("lmrec_gateway_recommend_seconds", "Recommend latency inside the gateway",
                                   ["source"], buckets=LATENCY_BUCKETS_S, registry=registry)
        self.degraded = Counter("lmrec_gateway_degraded_total", "Recommend answers served degraded, by reason",
                                ["reason"], registry=registry)
        for kind in DEGRADED_KINDS:  # present at 0 from the start, so rate() works before the first failure
            self.degraded.labels(kind)

    def observe_recommend(self, elapsed_s: float, timings_ms: Iterable[tuple[str, float]], source: str,
                          degraded_kinds: Iterable[str]) -> None:
        for stage, ms in timings_ms:
            self.stage.labels(stage).observe(ms / 1000)
        self.recommend.labels(source).observe(elapsed_s)
        for kind in degraded_kinds:
            self.degraded.labels(kind).inc()
