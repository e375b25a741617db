"""Prometheus metrics of the ranking batcher and the gateway, read back from their registries."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

pytest.importorskip("prometheus_client", reason="metrics need prometheus_client (lmrec[ranking])")
from prometheus_client import CollectorRegistry  # noqa: E402

from gateway.metrics import GatewayMetrics  # noqa: E402
from lmrec.errors import DeadlineExceeded, Overloaded  # noqa: E402
from ranking_service.batcher import MicroBatcher  # noqa: E402
from ranking_service.metrics import RankingMetrics  # noqa: E402


def test_batcher_reports_batches_waits_refusals_and_expiries():
    registry = CollectorRegistry()
    metrics = RankingMetrics(registry)
    gate = threading.Event()

    def run(texts):
        gate.wait(5)
        time.sleep(0.01)
        return np.zeros((len(texts), 1), dtype=np.float32)

    async def main():
        batcher = MicroBatcher(run, max_batch=8, max_wait_ms=1, max_queue=3, metrics=metrics)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(["a", "b"]))
        await asyncio.sleep(0.05)  # running, blocked on the gate
        expiring = asyncio.ensure_future(batcher.submit(["late"], deadline=time.monotonic() + 0.01))
        queued = [asyncio.ensure_future(batcher.submit([f"q{i}"])) for i in range(2)]
        await asyncio.sleep(0.05)
        depth_while_blocked = registry.get_sample_value("lmrec_ranking_queue_depth")
        with pytest.raises(Overloaded):
            await batcher.submit(["one too many"])
        gate.set()
        await asyncio.gather(first, *queued)
        with pytest.raises(DeadlineExceeded):
            await expiring
        await batcher.close()
        return depth_while_blocked

    assert asyncio.run(main()) == 3
    value = registry.get_sample_value
    assert value("lmrec_ranking_queue_depth") == 0
    assert value("lmrec_ranking_refused_total") == 1
    assert value("lmrec_ranking_expired_total") == 1
    # Two batches: the first request's 2 texts, then the two queued ones together.
    assert value("lmrec_ranking_batch_texts_count") == 2
    assert value("lmrec_ranking_batch_texts_sum") == 4
    assert value("lmrec_ranking_batch_texts_bucket", {"le": "1.0"}) == 0
    assert value("lmrec_ranking_batch_texts_bucket", {"le": "2.0"}) == 2
    assert value("lmrec_ranking_model_run_seconds_count") == 2
    assert value("lmrec_ranking_model_run_seconds_sum") >= 0.02
    # Three requests ran; the two queued ones waited for the blocked batch (~50 ms or more).
    assert value("lmrec_ranking_queue_wait_seconds_count") == 3
    assert value("lmrec_ranking_queue_wait_seconds_sum") >= 0.08


def test_gateway_metrics_count_stages_and_degraded_kinds():
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    assert registry.get_sample_value("lmrec_gateway_degraded_total", {"reason": "ranking_failed"}) == 0
    metrics.observe_recommend(0.012, [("history", 1.0), ("retrieval", 4.0), ("rank", 6.0)], "ranked", [])
    metrics.observe_recommend(0.020, [("history", 1.0), ("encode_context", 15.0)], "popularity",
                              ["ranking_unavailable"])
    value = registry.get_sample_value
    assert value("lmrec_gateway_stage_seconds_count", {"stage": "history"}) == 2
    assert value("lmrec_gateway_stage_seconds_sum", {"stage": "rank"}) == pytest.approx(0.006)
    assert value("lmrec_gateway_recommend_seconds_count", {"source": "ranked"}) == 1
    assert value("lmrec_gateway_degraded_total", {"reason": "ranking_unavailable"}) == 1
    assert value("lmrec_gateway_degraded_total", {"reason": "ranking_failed"}) == 0
    assert value("lmrec_gateway_new_item_slots_total", {"outcome": "asked"}) == 0
    metrics.observe_recommend(0.012, [("rank", 6.0)], "ranked", [], slots_asked=3, slots_filled=2)
    assert value("lmrec_gateway_new_item_slots_total", {"outcome": "asked"}) == 3
    assert value("lmrec_gateway_new_item_slots_total", {"outcome": "filled"}) == 2
