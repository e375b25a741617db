"""Prometheus metrics of the gateway: per-stage latency of Recommend, degraded answers by reason, the policy
stage's exploration and new-item slots, and every RPC's count and latency (lmrec/rpc_metrics.py)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from lmrec.metrics_http import LATENCY_BUCKETS_S
from lmrec.rpc_metrics import RpcMetrics

# Bounded label values for `degraded`: the free-text reason goes to the client, the kind to Prometheus.
DEGRADED_KINDS = ("ranking_unavailable", "ranking_failed", "ranking_deadline", "retrieval_partial", "ranking_unknown",
                  "state_unavailable")


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rpc = RpcMetrics(registry)
        self.stage = Histogram("lmrec_gateway_stage_seconds", "Latency of one Recommend stage", ["stage"],
                               buckets=LATENCY_BUCKETS_S, registry=registry)
        self.recommend = Histogram("lmrec_gateway_recommend_seconds", "Recommend latency inside the gateway",
                                   ["source"], buckets=LATENCY_BUCKETS_S, registry=registry)
        self.degraded = Counter("lmrec_gateway_degraded_total", "Recommend answers served degraded, by reason",
                                ["reason"], registry=registry)
        for kind in DEGRADED_KINDS:  # present at 0 from the start, so rate() works before the first failure
            self.degraded.labels(kind)
        # asked: slots requested (new_item_slots); filled: text-only items the answers held for them. A gap
        # means the candidates held too few new items (raise NUM_CANDIDATES) or ranking had failed.
        self.new_item_slots = Counter("lmrec_gateway_new_item_slots_total",
                                      "Places kept for text-only items in Recommend answers", ["outcome"],
                                      registry=registry)
        for outcome in ("asked", "filled"):
            self.new_item_slots.labels(outcome)
        # Scenario labels are the scenarios file's names plus "default" and "other": a bounded set.
        self.by_scenario = Counter("lmrec_gateway_recommend_requests_total",
                                   "Recommend answers by scenario and exploration policy", ["scenario", "policy"],
                                   registry=registry)
        self.explored = Counter("lmrec_gateway_explored_items_total",
                                "Items placed by exploration instead of the greedy choice", ["scenario"],
                                registry=registry)

    def declare_scenarios(self, labels: Iterable[str]) -> None:
        for label in labels:
            self.explored.labels(label)

    def observe_recommend(self, elapsed_s: float, timings_ms: Iterable[tuple[str, float]], source: str,
                          degraded_kinds: Iterable[str], slots_asked: int = 0, slots_filled: int = 0,
                          scenario: str = "default", policy: str = "greedy", explored: int = 0) -> None:
        self.by_scenario.labels(scenario, policy).inc()
        if explored:
            self.explored.labels(scenario).inc(explored)
        if slots_asked:
            self.new_item_slots.labels("asked").inc(slots_asked)
            self.new_item_slots.labels("filled").inc(slots_filled)
        for stage, ms in timings_ms:
            self.stage.labels(stage).observe(ms / 1000)
        self.recommend.labels(source).observe(elapsed_s)
        for kind in degraded_kinds:
            self.degraded.labels(kind).inc()
