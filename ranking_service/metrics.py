"""Prometheus metrics of the ranking tier: the micro-batcher's and the served model's, and the Ray Serve
front-end's; each with every RPC's count and latency (lmrec/rpc_metrics.py).

Each object registers into the registry it is given (a test or a second worker in one process gets its
own), and the process serves that registry with `lmrec.metrics_http.serve_metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from lmrec.metrics_http import LATENCY_BUCKETS_S
from lmrec.rpc_metrics import RpcMetrics

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class RankingMetrics:
    """What the micro-batcher reports: batch sizes, queue depth and wait, model run time, refusals; and which
    model serves (`watch_model`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rpc = RpcMetrics(registry)
        self._registry = registry
        self.batch_texts = Histogram("lmrec_ranking_batch_texts", "Texts per ONNX Runtime call (one batch)",
                                     buckets=BATCH_BUCKETS, registry=registry)
        self.queue_depth = Gauge("lmrec_ranking_queue_depth", "Requests waiting for the model", registry=registry)
        self.queue_wait = Histogram("lmrec_ranking_queue_wait_seconds",
                                    "Time a request waited in the queue before its batch ran",
                                    buckets=LATENCY_BUCKETS_S, registry=registry)
        self.model_run = Histogram("lmrec_ranking_model_run_seconds", "Wall time of one batch's model run",
                                   buckets=LATENCY_BUCKETS_S, registry=registry)
        self.refused = Counter("lmrec_ranking_refused_total",
                               "Requests refused with RESOURCE_EXHAUSTED because the queue was full",
                               registry=registry)
        self.expired = Counter("lmrec_ranking_expired_total",
                               "Queued requests dropped unrun because their caller's deadline had passed",
                               registry=registry)

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """The gauge reads the live queue length at scrape time."""
        self.queue_depth.set_function(depth)

    def watch_model(self, describe: Callable[[], Mapping[str, str]], known_items: Callable[[], int],
                    swaps: Callable[[], int]) -> None:
        """`lmrec_model_info{model_version,...} 1` from `describe()` and the served model's known items, read
        at scrape time, so a hot swap shows at the next scrape."""
        self._registry.register(_ModelCollector(describe, known_items, swaps))

    def observe_batch(self, n_texts: int, waits_s: Sequence[float], run_s: float) -> None:
        self.batch_texts.observe(n_texts)
        for wait in waits_s:
            self.queue_wait.observe(wait)
        self.model_run.observe(run_s)


class _ModelCollector:
    def __init__(self, describe: Callable[[], Mapping[str, str]], known_items: Callable[[], int],
                 swaps: Callable[[], int]) -> None:
        self._describe, self._known_items, self._swaps = describe, known_items, swaps

    def collect(self):
        info = InfoMetricFamily("lmrec_model", "The model this worker serves (value 1; labels say which)")
        info.add_metric([], dict(self._describe()))
        yield info
        yield GaugeMetricFamily("lmrec_ranking_known_items", "Items whose vectors the served model holds",
                                value=self._known_items())
        yield CounterMetricFamily("lmrec_ranking_model_swaps", "Hot swaps to a new model since start",
                                  value=self._swaps())


class FrontendMetrics:
    """What the Ray Serve front-end reports: calls per method and replica, retries, latency, errors."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rpc = RpcMetrics(registry)
        self.calls = Counter("lmrec_ranking_frontend_calls_total", "Calls answered, by method and Serve replica",
                             ["method", "replica"], registry=registry)
        self.retries = Counter("lmrec_ranking_frontend_retries_total",
                               "Calls sent again to another replica, by method and the failure that caused it",
                               ["method", "reason"], registry=registry)
        self.errors = Counter("lmrec_ranking_frontend_errors_total", "Calls that ended in an error status",
                              ["method", "code"], registry=registry)
        self.latency = Histogram("lmrec_ranking_frontend_latency_seconds",
                                 "Front-end call latency including retries", ["method"],
                                 buckets=LATENCY_BUCKETS_S, registry=registry)
