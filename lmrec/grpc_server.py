"""Server bootstrap shared by the three services: error mapping, health, reflection, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lmrec import tracing
from lmrec.admission import AdaptiveLimit
from lmrec.errors import LmrecError

log = logging.getLogger(__name__)

# Large enough for a 10k-item upsert batch of 384-d vectors; bigger batches must be split by the client.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Turns `LmrecError` into its status and anything unexpected into INTERNAL with a request id.

    The traceback goes to the log, never onto the wire.
    """

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = handler_call_details.method
        # Decoded here rather than by gRPC, which answers a malformed payload with UNKNOWN.
        deserialize = handler.request_deserializer

        async def guarded(raw, context: grpc.aio.ServicerContext):
            try:
                request = deserialize(raw) if deserialize is not None else raw
            except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends, from bytes the client sent
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"malformed request: the payload is not a valid {method} message")
            try:
                return await inner(request, context)
            except LmrecError as exc:
                await context.abort(exc.grpc_code, str(exc))
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception:
                request_id = uuid.uuid4().hex[:12]
                log.exception("unhandled error in %s (request id %s)", method, request_id)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")

        return grpc.unary_unary_rpc_method_handler(
            guarded, request_deserializer=None, response_serializer=handler.response_serializer)


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """At most a limit of calls of each named method in flight in this process; beyond it RESOURCE_EXHAUSTED
    at once, so overload sheds excess work instead of queueing every caller into its deadline. The limit
    adapts under the configured ceiling (lmrec/admission.py) unless `tolerance` is 0.

    One event loop serves the process, so plain counters are exact."""

    def __init__(self, limits: dict[str, int], tolerance: float = 3.0) -> None:
        self.limits = {method: AdaptiveLimit(limit, tolerance) for method, limit in limits.items() if limit > 0}
        self.in_flight = dict.fromkeys(self.limits, 0)
        self.refused = dict.fromkeys(self.limits, 0)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or method not in self.limits:
            return handler
        inner, limit = handler.unary_unary, self.limits[method]

        async def admitted(request, context: grpc.aio.ServicerContext):
            if self.in_flight[method] >= limit.current:
                self.refused[method] += 1
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"at capacity: {limit.current} {method.rsplit('/', 1)[-1]} calls in flight; "
                                    "retry with backoff")
            self.in_flight[method] += 1
            started = time.perf_counter()
            try:
                return await inner(request, context)
            finally:
                self.in_flight[method] -= 1
                limit.observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            admitted, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def new_server(interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
               max_receive_bytes: int = MAX_MESSAGE_BYTES,
               rpc_metrics: grpc.aio.ServerInterceptor | None = None) -> grpc.aio.Server:
    """`max_receive_bytes`: the largest request the port takes (a bigger one gets RESOURCE_EXHAUSTED before
    it is buffered); the public port sizes it from its largest valid request (gateway/limits.py).
    `rpc_metrics` (lmrec/rpc_metrics.py) and the process's tracing (lmrec/tracing.py) go outside the error
    mapping, so they see the status the client gets."""
    options = [("grpc.max_receive_message_length", max_receive_bytes),
               ("grpc.max_send_message_length", MAX_MESSAGE_BYTES), ("grpc.so_reuseport", 0)]
    observers = [*tracing.server_interceptors(), *([rpc_metrics] if rpc_metrics is not None else [])]
    return grpc.aio.server(interceptors=[*observers, ErrorMappingInterceptor(), *interceptors], options=options)


def add_health_and_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> health.aio.HealthServicer:
    """Registers grpc.health.v1 (overall and per service, NOT_SERVING until `mark_serving`) and reflection."""
    names = list(service_names)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    return health_servicer


async def set_health(health_servicer: health.aio.HealthServicer, service_names: Iterable[str], serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *service_names]:
        await health_servicer.set(name, status)


def bind(server: grpc.aio.Server, host: str, port: int, credentials: grpc.ServerCredentials | None = None) -> int:
    """Binds a port, TLS with `credentials` (lmrec/tls.py), else plaintext; returns the real port (port 0
    picks a free one)."""
    address = f"{host}:{port}"
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    return bound


async def serve_until_signalled(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    service_names: Iterable[str],
    grace_seconds: float,
    drain_s: float = 0.0,
) -> None:
    """Waits for SIGTERM/SIGINT; then reports NOT_SERVING, keeps answering for `drain_s` (so that load
    balancers and health-checking callers move away first), stops taking calls and lets those in flight
    finish within `grace_seconds`. A second signal during the drain cuts it short."""
    names = list(service_names)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    stop.clear()
    await set_health(health_servicer, names, serving=False)
    if drain_s > 0:
        log.info("stopping: health NOT_SERVING, still answering for %.1fs (drain)", drain_s)
        try:
            await asyncio.wait_for(stop.wait(), drain_s)
        except asyncio.TimeoutError:
            pass
    log.info("stopping: no new calls, %.1fs grace for in-flight calls", grace_seconds)
    await server.stop(grace_seconds)


PARENT_PID_ENV = "LMREC_PARENT_PID"


def die_with_parent() -> None:
    """When started by `lmrec serve` (which sets LMREC_PARENT_PID): ask Linux to send this process SIGTERM
    when that parent dies, however it dies (SIGKILL included), so no orphan keeps holding its port.
    Armed here in the service, not between fork and exec, where gRPC's fork handlers can deadlock."""
    parent = os.environ.get(PARENT_PID_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(parent):  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
