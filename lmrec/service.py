"""One lifecycle for every service process: tracing, metrics, build, start, health, port file, background
tasks, serve until signalled, close in reverse order of opening."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc
from grpc_health.v1.health import aio as health_aio

from lmrec.grpc_server import (MAX_MESSAGE_BYTES, add_health_and_reflection, bind, new_server, serve_until_signalled,
                               set_health)
from lmrec.metrics_http import metrics_off, start_metrics
from lmrec.service_flags import write_port_file
from lmrec.tracing import start_tracing

if TYPE_CHECKING:
    from lmrec.service_settings import ServingSettings

log = logging.getLogger(__name__)
M = TypeVar("M")


@dataclass
class Listening:
    """A built server, bound but not started (`listen`)."""

    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    service_names: list[str]


def listen(settings: ServingSettings, service_names: list[str], register: Callable[[grpc.aio.Server], None],
           role: str, *, interceptors: list[grpc.aio.ServerInterceptor] | tuple = (),
           rpc_metrics: grpc.aio.ServerInterceptor | None = None,
           max_receive_bytes: int = MAX_MESSAGE_BYTES) -> Listening:
    """A server with the kernel's interceptors, the servicers `register` adds, health (NOT_SERVING until
    started) and reflection, bound on `settings.host`:`settings.port` (TLS from the settings). Not started:
    tests start it themselves."""
    server = new_server(interceptors, max_receive_bytes, rpc_metrics)
    register(server)
    health = add_health_and_reflection(server, service_names)
    port = bind(server, settings.host, settings.port, settings.server_tls().credentials(role))
    return Listening(server, port, health, list(service_names))


@dataclass
class Running:
    """What a service's `build` hands back to `run_service`."""

    listening: Listening
    describe: str  # said once serving: "gateway serving on host:port (<describe>)"
    background: list[Coroutine[Any, Any, None]] = field(default_factory=list)  # cancelled at stop


@dataclass(frozen=True)
class ServiceSpec(Generic[M]):
    role: str  # names the process in logs, traces (lmrec-<role>) and metrics
    metrics: Callable[[Any], M] | None = None  # built on the process's registry unless metrics are off
    trace_attributes: dict[str, Any] = field(default_factory=dict)


Build = Callable[[Any, AsyncExitStack], Awaitable[Running]]


async def run_service(settings: ServingSettings, spec: ServiceSpec, build: Build) -> None:
    """Runs one service process until SIGTERM/SIGINT.

    `build(metrics, resources)` opens what the service needs, registering each closer on `resources` as it
    goes (so a failure half-way closes what was opened), and returns the bound server. Metrics (None when
    off) and tracing come first, so the service's downstream channels and its model loading carry them."""
    async with AsyncExitStack() as resources:
        tracer = start_tracing(spec.role, settings, **spec.trace_attributes)
        if tracer is not None:
            resources.callback(tracer.shutdown)
        metrics = None
        if spec.metrics is not None and not metrics_off(settings):
            metrics, metrics_server = start_metrics(spec.metrics, settings, spec.role)
            resources.callback(metrics_server.close)
        running = await build(metrics, resources)
        listening = running.listening
        await listening.server.start()
        await set_health(listening.health, listening.service_names, serving=True)
        log.info("%s serving on %s:%d (%s)", spec.role, settings.host, listening.port, running.describe)
        if settings.port_file is not None:
            write_port_file(settings.port_file, listening.port)
        tasks = [asyncio.create_task(work) for work in running.background]
        try:
            await serve_until_signalled(listening.server, listening.health, listening.service_names,
                                        settings.grace_seconds, settings.drain_s)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
