"""Trace context across two in-process hops: a caller's traceparent → server span → client span → the next
server's span; health checks untraced; log lines carry the trace id; the budget's stages are spans."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

pytest.importorskip("opentelemetry.sdk", reason="tracing needs lmrec[tracing]")
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from gateway.budget import Budget  # noqa: E402
from lmrec import tracing  # noqa: E402
from lmrec.grpc_server import add_health_and_reflection, new_server  # noqa: E402
from lmrec.logging_setup import TraceIds  # noqa: E402

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
log = logging.getLogger("test.tracing")


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer(provider.get_tracer("test"))
    yield exporter
    tracing.use_tracer(None)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.addFilter(TraceIds())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _two_hops() -> None:
    async def leaf(request, context):
        log.warning("in the leaf")
        await context.abort(grpc.StatusCode.NOT_FOUND, "nothing here")

    leaf_server = new_server()
    leaf_server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Leaf", {"Get": grpc.unary_unary_rpc_method_handler(leaf)})])
    leaf_port = leaf_server.add_insecure_port("127.0.0.1:0")
    await leaf_server.start()
    downstream = grpc.aio.insecure_channel(f"127.0.0.1:{leaf_port}", interceptors=tracing.client_interceptors())

    async def front(request, context):
        log.warning("in the front")
        budget = Budget.from_context(context.time_remaining(), 1.0, 0.0)
        with budget.stage("lookup") as stage:
            stage.annotate(k=7)
            try:
                await downstream.unary_unary("/test.Leaf/Get")(b"", timeout=5)
            except grpc.aio.AioRpcError:
                pass
        return b"done"

    front_server = new_server()
    front_server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Front", {"Call": grpc.unary_unary_rpc_method_handler(front)})])
    add_health_and_reflection(front_server, [])
    front_port = front_server.add_insecure_port("127.0.0.1:0")
    await front_server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{front_port}") as channel:
            traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
            assert await channel.unary_unary("/test.Front/Call")(b"", timeout=5,
                                                                  metadata=[("traceparent", traceparent)]) == b"done"
            await channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5)
    finally:
        await downstream.close()
        await front_server.stop(None)
        await leaf_server.stop(None)


def test_the_callers_trace_continues_across_hops_and_into_the_logs(spans):
    records = Records()
    log.addHandler(records)
    try:
        asyncio.run(_two_hops())
    finally:
        log.removeHandler(records)
    by_name = {s.name: s for s in spans.get_finished_spans()}
    # The health check made none; the leaf call made two (the client's and the leaf server's).
    assert sorted(s.name for s in spans.get_finished_spans()) == [
        "recommend.lookup", "test.Front/Call", "test.Leaf/Get", "test.Leaf/Get"]
    front = by_name["test.Front/Call"]
    stage = by_name["recommend.lookup"]
    leaf_spans = [s for s in spans.get_finished_spans() if s.name == "test.Leaf/Get"]
    client = next(s for s in leaf_spans if s.kind == SpanKind.CLIENT)
    leaf = next(s for s in leaf_spans if s.kind == SpanKind.SERVER)
    assert {format(s.context.trace_id, "032x") for s in spans.get_finished_spans()} == {TRACE_ID}
    assert front.kind == SpanKind.SERVER and format(front.parent.span_id, "016x") == PARENT_ID
    assert stage.parent.span_id == front.context.span_id and stage.attributes["lmrec.k"] == 7
    assert stage.attributes["lmrec.stage"] == "lookup"
    assert client.parent.span_id == stage.context.span_id
    assert leaf.parent.span_id == client.context.span_id
    assert leaf.status.status_code == StatusCode.ERROR and leaf.attributes["rpc.grpc.status_code"] == 5
    assert client.status.status_code == StatusCode.ERROR
    assert front.attributes["rpc.grpc.status_code"] == 0 and front.attributes["rpc.method"] == "Call"
    # Log lines name the trace (and the span) they were written in.
    lines = {r.getMessage(): r for r in records.records}
    assert lines["in the front"].trace_id == TRACE_ID
    assert lines["in the front"].span_id == format(front.context.span_id, "016x")
    assert lines["in the leaf"].trace_id == TRACE_ID


def test_off_means_no_interceptors_no_spans_and_dashes_in_logs():
    assert not tracing.enabled()
    assert tracing.server_interceptors() == [] and tracing.client_interceptors() == []
    assert tracing.span("anything") is None
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    TraceIds().filter(record)
    assert (record.trace_id, record.span_id) == ("-", "-")
    budget = Budget.from_context(None, 1.0, 0.0)
    with budget.stage("history") as stage:
        stage.annotate(events=3)
    assert [name for name, _ in budget.timings] == ["history"]
