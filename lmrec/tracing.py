"""OpenTelemetry traces across the services, with W3C trace context (`traceparent`) in gRPC metadata.

Off unless `otlp_endpoint` is set (lmrec/service_settings.py): then no interceptor is installed and no
span is made, so tracing costs nothing and opentelemetry need not be installed. On (lmrec[tracing]): each
served call continues its caller's trace, each call the process makes carries its own span's context, and
spans go in batches to the OTLP/gRPC endpoint. New traces are sampled at `trace_sample_ratio`; a caller's
sampling decision is kept, so one trace is whole or absent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import grpc

from lmrec.errors import final_code

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

    from lmrec.service_settings import ServingSettings

log = logging.getLogger(__name__)

# Probes and supervisors poll these all the time: their spans would bury the traces that matter.
UNTRACED = ("/grpc.health.v1.", "/grpc.reflection.")

_tracer: Tracer | None = None


def start_tracing(service: str, settings: ServingSettings, **resource: Any) -> TracerProvider | None:
    """Turns tracing on for this process when `settings.otlp_endpoint` is set; returns the provider, whose
    `shutdown()` flushes the spans not yet sent, or None (tracing off). `resource`: attributes naming this
    process beyond `service.name` = lmrec-<service>."""
    if settings.otlp_endpoint is None:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as exc:
        raise SystemExit(f"invalid settings\notlp_endpoint: tracing needs lmrec[tracing] ({exc.name} is not "
                         "installed)") from None
    provider = TracerProvider(resource=Resource.create({"service.name": f"lmrec-{service}", **resource}),
                              sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    use_tracer(provider.get_tracer("lmrec"))
    log.info("tracing on: spans to %s, %.0f%% of new traces sampled", settings.otlp_endpoint,
             100 * settings.trace_sample_ratio)
    return provider


def use_tracer(tracer: Tracer | None) -> None:
    """Sets the tracer this process's interceptors and spans use (None: tracing off). `start_tracing` calls
    it; tests give one on an in-memory exporter."""
    global _tracer
    _tracer = tracer


def enabled() -> bool:
    return _tracer is not None


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    return [ServerSpans(_tracer)] if _tracer is not None else []


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    return [ClientSpans(_tracer)] if _tracer is not None else []


def span(name: str, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager | None:
    """A child span of the current one, made current inside `with`; None when tracing is off."""
    if _tracer is None:
        return None
    return _tracer.start_as_current_span(name, attributes=attributes)


def annotate(attributes: Mapping[str, Any], target=None) -> None:
    """Sets attributes on `target` (a span) or on the current span; nothing when tracing is off."""
    if _tracer is None:
        return
    from opentelemetry import trace

    (target or trace.get_current_span()).set_attributes(dict(attributes))


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the span current here, for log lines; None outside any span."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _rpc_attributes(method: str) -> dict[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


class ServerSpans(grpc.aio.ServerInterceptor):
    """A SERVER span per call, the child of the caller's span when its metadata carries a `traceparent`."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or method.startswith(UNTRACED):
            return handler
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, Status, StatusCode

        inner = handler.unary_unary
        # Binary (-bin) entries are bytes and never trace context.
        carrier = {m.key: m.value for m in handler_call_details.invocation_metadata or () if isinstance(m.value, str)}

        async def traced(request, context: grpc.aio.ServicerContext):
            with self._tracer.start_as_current_span(
                    method.lstrip("/"), context=propagate.extract(carrier), kind=SpanKind.SERVER,
                    attributes=_rpc_attributes(method), record_exception=False,
                    set_status_on_exception=False) as current:
                error = None
                try:
                    return await inner(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    code = final_code(context, error)
                    current.set_attribute("rpc.grpc.status_code", code.value[0])
                    if code != grpc.StatusCode.OK:
                        current.set_status(Status(StatusCode.ERROR, f"{code.name}: {context.details() or ''}"))

        return grpc.unary_unary_rpc_method_handler(
            traced, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


class ClientSpans(grpc.aio.UnaryUnaryClientInterceptor):
    """A CLIENT span per call, its context sent along as `traceparent` metadata."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, Status, StatusCode

        method = client_call_details.method
        method = method.decode() if isinstance(method, bytes) else method
        with self._tracer.start_as_current_span(method.lstrip("/"), kind=SpanKind.CLIENT,
                                                attributes=_rpc_attributes(method)) as current:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()), *carrier.items())
            call = await continuation(client_call_details._replace(metadata=metadata), request)
            code = await call.code()  # waits for the end of the call without raising its error
            current.set_attribute("rpc.grpc.status_code", code.value[0])
            if code != grpc.StatusCode.OK:
                current.set_status(Status(StatusCode.ERROR, f"{code.name}: {await call.details()}"))
            return call
