"""Prometheus endpoints of the three services, on by default, scraped after real calls."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import grpc
import pytest

pytest.importorskip("prometheus_client", reason="metrics need prometheus_client")
from lmrec.bundle import load_manifest  # noqa: E402
from lmrec.v1 import gateway_service_pb2 as gw  # noqa: E402

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "lmrec.json"


def dashboard_series() -> set[str]:
    """The sample names the Grafana dashboard's queries read."""
    exprs = [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"]
             for target in panel.get("targets", [])]
    return {name for expr in exprs for name in re.findall(r"\b((?:lmrec|process)_[a-z_]+)", expr)}


def test_metrics_of_every_service_after_real_calls(small_system_factory, metrics_scraper, bundle_dir):
    _free_port, scrape = metrics_scraper
    system = small_system_factory(histories=False)  # metrics on by default, here on free ports
    ports = {name: service.metrics_port for name, service in system.group.services.items()}
    assert all(ports.values()), ports
    for user in range(10):
        query = f"space adventure number {user}"  # distinct: the worker caches query vectors
        response = system.stub.Recommend(gw.RecommendRequest(user_id=str(user), k=10, query=query), timeout=10)
        assert not response.degraded and response.source == "ranked"

    ranking = scrape(ports["ranking"])
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
    manifest = load_manifest(bundle_dir, verify_checksums=False)
    info = [labels for (name, labels), v in ranking.items() if name == "lmrec_model_info" and v == 1]
    assert len(info) == 1 and ("model_version", manifest.model_version) in info[0]
    assert value(ranking, "lmrec_ranking_known_items") >= 300
    service = "lmrec.v1.RankingService"
    for method in ("EncodeContext", "Rank"):
        assert value(ranking, "lmrec_grpc_server_handled_total", service=service, method=method, code="OK") >= 10
        assert value(ranking, "lmrec_grpc_server_handling_seconds_count", service=service, method=method) >= 10
    assert value(ranking, "process_resident_memory_bytes") > 0
    assert value(ranking, "process_cpu_seconds_total") > 0

    retrieval = scrape(ports["retrieval-0"])
    searches = sum(v for (name, _), v in retrieval.items() if name == "lmrec_retrieval_search_seconds_count")
    assert searches == 10
    assert value(retrieval, "lmrec_retrieval_search_results_count") == 10
    assert value(retrieval, "lmrec_retrieval_search_results_sum") > 0
    assert value(retrieval, "lmrec_retrieval_items") == 300
    assert value(retrieval, "lmrec_retrieval_upserted_items_total") >= 300
    assert value(retrieval, "lmrec_retrieval_deleted_items_total") == 0
    assert value(retrieval, "lmrec_grpc_server_handled_total", service="lmrec.v1.RetrievalService",
                 method="Search", code="OK") == 10

    gateway = scrape(ports["gateway"])
    for stage in ("history", "encode_context", "retrieval", "rank", "policy"):
        assert value(gateway, "lmrec_gateway_stage_seconds_count", stage=stage) == 10, stage
        assert 0 < value(gateway, "lmrec_gateway_stage_seconds_sum", stage=stage) < 10
    assert value(gateway, "lmrec_gateway_recommend_seconds_count", source="ranked") == 10
    assert value(gateway, "lmrec_gateway_degraded_total", reason="ranking_unavailable") == 0
    assert value(gateway, "lmrec_grpc_server_handled_total", service="lmrec.v1.GatewayService", method="Recommend",
                 code="OK") == 10
    assert value(gateway, "process_resident_memory_bytes") > 0

    # Every series the dashboard reads is served by some service.
    served = {name for samples in (ranking, retrieval, gateway) for name, _ in samples}
    assert dashboard_series() - served == set()

    system.group.stop("ranking", sig=signal.SIGKILL)
    response = system.stub.Recommend(gw.RecommendRequest(user_id="1", k=5, query="space adventure"), timeout=10)
    assert response.degraded
    gateway = scrape(ports["gateway"])
    assert value(gateway, "lmrec_gateway_degraded_total", reason="ranking_unavailable") == 1
    assert value(gateway, "lmrec_gateway_recommend_seconds_count", source="popularity") == 1
    # A bad argument is counted under its code.
    with pytest.raises(grpc.RpcError):
        system.stub.Recommend(gw.RecommendRequest(user_id="", k=5), timeout=10)
    gateway = scrape(ports["gateway"])
    assert value(gateway, "lmrec_grpc_server_handled_total", service="lmrec.v1.GatewayService", method="Recommend",
                 code="INVALID_ARGUMENT") == 1
