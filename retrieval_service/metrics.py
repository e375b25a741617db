"""Prometheus metrics of a retrieval shard: search latency and results by plan, writes, and the index's size;
with every RPC's count and latency (lmrec/rpc_metrics.py)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lmrec.metrics_http import LATENCY_BUCKETS_S
from lmrec.rpc_metrics import RpcMetrics

RESULT_BUCKETS = (0, 1, 5, 10, 25, 50, 100, 200, 500, 1000, 2500, 10_000)


class RetrievalMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rpc = RpcMetrics(registry)
        # plan: hnsw, hnsw_filtered, hnsw_post_filter, hnsw_value_graph, exact or none (retrieval_service/index.py).
        self.search = Histogram("lmrec_retrieval_search_seconds", "Index search time of one Search, by plan",
                                ["plan"], buckets=LATENCY_BUCKETS_S, registry=registry)
        self.results = Histogram("lmrec_retrieval_search_results", "Items one Search returned",
                                 buckets=RESULT_BUCKETS, registry=registry)
        self.upserted = Counter("lmrec_retrieval_upserted_items_total", "Items written by Upsert",
                                registry=registry)
        self.deleted = Counter("lmrec_retrieval_deleted_items_total", "Items removed by Delete",
                               registry=registry)
        self.items = Gauge("lmrec_retrieval_items", "Live items in this shard's index", registry=registry)

    def watch_items(self, count: Callable[[], int]) -> None:
        """The gauge reads the index's live size at scrape time."""
        self.items.set_function(count)

    def observe_search(self, plan: str, seconds: float, results: int) -> None:
        self.search.labels(plan).observe(seconds)
        self.results.observe(results)
