"""Metrics ports: documented defaults, 0 = any free port (written to a file), -1 = off; the layout's shard
arithmetic; and the tracing settings' checks."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import GatewaySettings
from lmrec.metrics_http import metrics_off, start_metrics
from lmrec_tools.supervisor import SystemLayout
from ranking_service.settings import RankingSettings
from retrieval_service.settings import RetrievalSettings


def test_defaults_are_the_documented_ports_and_minus_one_is_off(monkeypatch):
    monkeypatch.delenv("LMREC_GATEWAY_METRICS_PORT", raising=False)
    assert (GatewaySettings().metrics_port, RankingSettings().metrics_port, RetrievalSettings().metrics_port) == (
        9091, 9092, 9093)
    assert metrics_off(GatewaySettings(metrics_port=-1)) and not metrics_off(GatewaySettings(metrics_port=0))
    with pytest.raises(ValidationError, match="metrics_port"):
        GatewaySettings(metrics_port=-2)


def test_layout_ports_follow_the_grpc_ports_and_the_shard():
    layout = SystemLayout(Path("s"), Path("b"))
    assert [layout.metrics_port("gateway"), layout.metrics_port("ranking")] == [9091, 9092]
    assert [layout.metrics_port("retrieval", i) for i in range(3)] == [9093, 9103, 9113]
    # Any free gRPC port: any free metrics port, so two test systems never collide.
    free = SystemLayout(Path("s"), Path("b"), gateway_port=0, ranking_port=0, retrieval_port=0)
    assert [free.metrics_port("gateway"), free.metrics_port("ranking"), free.metrics_port("retrieval", 2)] == [0, 0, 0]
    chosen = SystemLayout(Path("s"), Path("b"), retrieval_metrics_port=9200, ranking_metrics_port=-1)
    assert (chosen.metrics_port("retrieval", 2), chosen.metrics_port("ranking")) == (9220, -1)


def test_port_zero_serves_on_a_free_port_and_says_which(tmp_path):
    pytest.importorskip("prometheus_client")
    settings = RetrievalSettings(metrics_port=0, metrics_port_file=tmp_path / "metrics.port")
    metrics, server = start_metrics(lambda registry: registry, settings, "test")
    try:
        assert int((tmp_path / "metrics.port").read_text()) == server.port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        assert "process_resident_memory_bytes" in text and "python_info" in text
    finally:
        server.close()


def test_a_taken_port_stops_the_service_naming_the_setting(tmp_path):
    pytest.importorskip("prometheus_client")
    _, first = start_metrics(lambda registry: registry, RetrievalSettings(metrics_port=0), "test")
    try:
        with pytest.raises(SystemExit, match="metrics_port"):
            start_metrics(lambda registry: registry, RetrievalSettings(metrics_port=first.port), "test")
    finally:
        first.close()


@pytest.mark.parametrize("endpoint", ["collector:4317", "grpc://collector:4317", "http://"])
def test_an_otlp_endpoint_must_say_plaintext_or_tls(endpoint):
    with pytest.raises(ValidationError, match="otlp_endpoint"):
        RankingSettings(otlp_endpoint=endpoint)
    assert RankingSettings(otlp_endpoint="https://collector:4317", trace_sample_ratio=0.1).trace_sample_ratio == 0.1
