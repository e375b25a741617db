"""Per-RPC Prometheus metrics of a gRPC server: calls by service, method and status code, and their latency.

One server interceptor, outside the error mapping (lmrec/grpc_server.new_server), so the code counted is
the one the client sees. Names follow go-grpc-prometheus, prefixed `lmrec_`.
"""

from __future__ import annotations

import time

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from lmrec.errors import final_code
from lmrec.metrics_http import LATENCY_BUCKETS_S


class RpcMetrics(grpc.aio.ServerInterceptor):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.handled = Counter("lmrec_grpc_server_handled_total", "RPCs completed on the server, by status code",
                               ["service", "method", "code"], registry=registry)
        self.seconds = Histogram("lmrec_grpc_server_handling_seconds",
                                 "Time from receiving an RPC to its status, on the server", ["service", "method"],
                                 buckets=LATENCY_BUCKETS_S, registry=registry)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")

        async def measured(request, context: grpc.aio.ServicerContext):
            started, error = time.perf_counter(), None
            try:
                return await inner(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                self.seconds.labels(service, method).observe(time.perf_counter() - started)
                self.handled.labels(service, method, final_code(context, error).name).inc()

        return grpc.unary_unary_rpc_method_handler(
            measured, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
