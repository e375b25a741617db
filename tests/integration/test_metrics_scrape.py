"""Prometheus endpoints of the ranking worker and the gateway, scraped after real calls."""

from __future__ import annotations

import signal

import pytest

pytest.importorskip("prometheus_client", reason="metrics need prometheus_client")
from lmrec.v1 import gateway_service_pb2 as gw  # noqa: E402

pytestmark = pytest.mark.integration


def test_ranking_and_gateway_metrics_after_real_calls(small_system_factory, metrics_scraper):
    free_port, scrape = metrics_scraper
    ranking_port, gateway_port = free_port(), free_port()
    system = small_system_factory(histories=False, extra_args={
        "ranking": ["--metrics-port", str(ranking_port)], "gateway": ["--metrics-port", str(gateway_port)]})
    for user in range(10):
        query = f"space adventure number {user}"  # distinct: the worker caches query vectors
        response = system.stub.Recommend(gw.RecommendRequest(user_id=str(user), k=10, query=query), timeout=10)
        assert not response.degraded and response.source == "ranked"

    ranking = scrape(ranking_port)
    value = lambda samples, name, **labels: samples.get((name, frozenset(labels.items())))  # noqa: E731
    # The 300 catalogue texts and 10 queries were encoded in batches of at most 64 (max_batch_texts).
    batches = value(ranking, "lmrec_ranking_batch_texts_count")
    assert value(ranking, "lmrec_ranking_batch_texts_sum") >= 310
    assert 5 <= batches <= 300
    assert value(ranking, "lmrec_ranking_batch_texts_bucket", le="+Inf") == batches
    assert value(ranking, "lmrec_ranking_model_run_seconds_count") == batches
    assert 0 < value(ranking, "lmrec_ranking_model_run_seconds_sum") < batches * 5
    assert value(ranking, "lmrec_ranking_queue_wait_seconds_count") >= 10
    assert value(ranking, "lmrec_ranking_queue_depth") == 0
    assert value(ranking, "lmrec_ranking_refused_total") == 0
    assert value(ranking, "lmrec_ranking_expired_total") == 0

    gateway = scrape(gateway_port)
    for stage in ("history", "encode_context", "retrieval", "rank"):
        assert value(gateway, "lmrec_gateway_stage_seconds_count", stage=stage) == 10, stage
        assert 0 < value(gateway, "lmrec_gateway_stage_seconds_sum", stage=stage) < 10
    assert value(gateway, "lmrec_gateway_recommend_seconds_count", source="ranked") == 10
    assert value(gateway, "lmrec_gateway_degraded_total", reason="ranking_unavailable") == 0

    system.group.stop("ranking", sig=signal.SIGKILL)
    response = system.stub.Recommend(gw.RecommendRequest(user_id="1", k=5, query="space adventure"), timeout=10)
    assert response.degraded
    gateway = scrape(gateway_port)
    assert value(gateway, "lmrec_gateway_degraded_total", reason="ranking_unavailable") == 1
    assert value(gateway, "lmrec_gateway_recommend_seconds_count", source="popularity") == 1
