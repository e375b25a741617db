"""One trace across the real system: the client's traceparent → the gateway's server span and its stage
spans → its calls to ranking and retrieval → their server spans, all exported over OTLP/gRPC to a collector
in this test; and the gateway's log lines (JSON here) for the request carry the trace id."""

from __future__ import annotations

import json
import threading
import time
from concurrent import futures

import grpc
import pytest

pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc", reason="tracing needs lmrec[tracing]")
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc  # noqa: E402

from lmrec.v1 import gateway_service_pb2 as gw  # noqa: E402

pytestmark = pytest.mark.integration

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
STAGES = ("history", "encode_context", "retrieval", "rank", "policy")


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver keeping every span with its service's name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []
        self._lock = threading.Lock()

    def Export(self, request, context):
        with self._lock:
            for resource_spans in request.resource_spans:
                service = next(a.value.string_value for a in resource_spans.resource.attributes
                               if a.key == "service.name")
                for scope in resource_spans.scope_spans:
                    self.spans.extend((service, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str) -> list[tuple[str, object]]:
        with self._lock:
            return [(s, span) for s, span in self.spans if span.trace_id.hex() == trace_id]


@pytest.fixture
def collector():
    receiver = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, f"http://127.0.0.1:{port}"
    server.stop(None)


def _attributes(span) -> dict:
    def value(v):
        kind = v.WhichOneof("value")
        if kind == "array_value":
            return [value(x) for x in v.array_value.values]
        return getattr(v, kind)
    return {a.key: value(a.value) for a in span.attributes}


def test_a_recommend_is_one_trace_across_gateway_ranking_and_retrieval(small_system_factory, collector, monkeypatch):
    receiver, endpoint = collector
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export within 0.1 s rather than 5 s
    monkeypatch.setenv("LMREC_LOG_JSON", "true")
    monkeypatch.setenv("LMREC_LOG_LEVEL", "DEBUG")  # the gateway logs each Recommend at DEBUG
    system = small_system_factory(n_items=100, histories=False, otlp_endpoint=endpoint)

    response = system.stub.Recommend(gw.RecommendRequest(user_id="u1", k=5, query="a space adventure"), timeout=10,
                                     metadata=[("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01")])
    assert not response.degraded and response.source == "ranked"

    def spans_named(name: str, service: str | None = None) -> list:
        return [span for s, span in receiver.of_trace(TRACE_ID)
                if span.name == name and (service is None or s == service)]

    wanted = [("lmrec.v1.GatewayService/Recommend", "lmrec-gateway"),
              ("lmrec.v1.RankingService/Rank", "lmrec-ranking"),
              ("lmrec.v1.RetrievalService/Search", "lmrec-retrieval"),
              *((f"recommend.{stage}", "lmrec-gateway") for stage in STAGES)]
    deadline = time.monotonic() + 20
    while not all(spans_named(n, s) for n, s in wanted) and time.monotonic() < deadline:
        time.sleep(0.1)
    services = {s for s, _ in receiver.of_trace(TRACE_ID)}
    assert services == {"lmrec-gateway", "lmrec-ranking", "lmrec-retrieval"}, services

    SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind
    (recommend,) = spans_named("lmrec.v1.GatewayService/Recommend")
    assert recommend.kind == SERVER and recommend.parent_span_id.hex() == CALLER_SPAN
    attributes = _attributes(recommend)
    assert attributes["lmrec.k"] == 5 and attributes["lmrec.source"] == "ranked"
    assert attributes["lmrec.degraded"] is False and attributes["lmrec.candidates"] > 0
    assert attributes["lmrec.request_id"] == response.request_id
    assert attributes["rpc.grpc.status_code"] == 0

    stages = {stage: spans_named(f"recommend.{stage}") for stage in STAGES}
    assert all(len(found) == 1 for found in stages.values()), {k: len(v) for k, v in stages.items()}
    stages = {stage: found[0] for stage, found in stages.items()}
    assert all(s.parent_span_id == recommend.span_id for s in stages.values())
    retrieval_stage = _attributes(stages["retrieval"])
    assert retrieval_stage["lmrec.k"] > 0 and retrieval_stage["lmrec.candidates"] > 0
    assert _attributes(stages["rank"])["lmrec.candidates"] == retrieval_stage["lmrec.candidates"]
    assert _attributes(stages["policy"])["lmrec.k"] == 5

    # Each downstream call: the gateway's CLIENT span under its stage, the worker's SERVER span under that.
    for method, stage, worker in [("lmrec.v1.RankingService/EncodeContext", "encode_context", "lmrec-ranking"),
                                  ("lmrec.v1.RankingService/Rank", "rank", "lmrec-ranking"),
                                  ("lmrec.v1.RetrievalService/Search", "retrieval", "lmrec-retrieval")]:
        (client,) = [s for s in spans_named(method, "lmrec-gateway") if s.kind == CLIENT]
        (served,) = [s for s in spans_named(method, worker) if s.kind == SERVER]
        assert client.parent_span_id == stages[stage].span_id, method
        assert served.parent_span_id == client.span_id, method
    search = _attributes(spans_named("lmrec.v1.RetrievalService/Search", "lmrec-retrieval")[0])
    assert search["lmrec.results"] > 0 and search["lmrec.plan"]

    # The gateway's log: JSON lines; the Recommend's own line carries its trace id, start-up lines "-".
    lines = [json.loads(line) for line in system.group.services["gateway"].log_path.read_text().splitlines()
             if line.startswith("{")]
    assert lines and all(line["service"] == "gateway" for line in lines)
    ours = [line for line in lines if line["trace_id"] == TRACE_ID]
    assert any(response.request_id in line["message"] for line in ours), ours
    assert any(line["trace_id"] == "-" and "serving on" in line["message"] for line in lines)
