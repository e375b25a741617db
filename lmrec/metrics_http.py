"""Prometheus exposition over HTTP for every lmrec process (`metrics_port` in each service's settings).

prometheus_client is imported only when metrics are switched on, so a process installed without it runs
as long as its `metrics_port` is 0 (off).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)

# Shared latency buckets (seconds): sub-millisecond model calls up to multi-second stalls.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

M = TypeVar("M")


@dataclass
class MetricsServer:
    port: int
    _httpd: Any

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def serve_metrics(registry, host: str, port: int) -> MetricsServer:
    """Serves `registry` at http://host:port/metrics on a daemon thread; port 0 picks a free port."""
    from prometheus_client import start_http_server

    httpd, _thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(httpd.server_port, httpd)


def start_metrics(build: Callable[[Any], M], host: str, port: int, service: str) -> tuple[M, MetricsServer]:
    """Builds a service's metrics object on a fresh registry and serves that registry."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    metrics = build(registry)
    server = serve_metrics(registry, host, port)
    log.info("%s metrics on http://%s:%d/metrics", service, host, server.port)
    return metrics, server
