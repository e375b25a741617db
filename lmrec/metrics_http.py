"""Prometheus exposition over HTTP for every lmrec process (`metrics_port` in each service's settings).

On by default, on each service's documented port (README "Observability"); -1 turns it off, 0 takes any
free port and, with `metrics_port_file`, says which. Each process's registry also holds the process
collector's `process_*` metrics (memory, CPU, open files) and the platform's `python_info`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from lmrec.service_flags import write_port_file

if TYPE_CHECKING:
    from lmrec.service_settings import ServingSettings

log = logging.getLogger(__name__)

# Shared latency buckets (seconds): sub-millisecond model calls up to multi-second stalls.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METRICS_OFF = -1

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

    try:
        httpd, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise SystemExit(f"invalid settings\nmetrics_port: cannot serve metrics on {host}:{port} ({exc.strerror}); "
                         f"choose another port, 0 for any free one, or {METRICS_OFF} for none") from None
    return MetricsServer(httpd.server_port, httpd)


def metrics_off(settings: ServingSettings) -> bool:
    return settings.metrics_port == METRICS_OFF


def start_metrics(build: Callable[[Any], M], settings: ServingSettings, service: str) -> tuple[M, MetricsServer]:
    """Builds a service's metrics object on a fresh registry, with the process's metrics, serves that
    registry on `settings.host`:`settings.metrics_port`, and writes the bound port to `metrics_port_file`."""
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    metrics = build(registry)
    server = serve_metrics(registry, settings.host, settings.metrics_port)
    log.info("%s metrics on http://%s:%d/metrics", service, settings.host, server.port)
    if settings.metrics_port_file is not None:
        write_port_file(settings.metrics_port_file, server.port)
    return metrics, server
