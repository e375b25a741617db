"""Starts lmrec services as separate local processes and waits until their health says SERVING.

Used by `lmrec serve` and by the integration tests, so the tests start what users run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from lmrec.service_settings import GATEWAY_PORT, RANKING_PORT, RETRIEVAL_PORT
from grpc_health.v1 import health_pb2, health_pb2_grpc


class StartupError(RuntimeError):
    pass


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    port: int
    log_path: Path
    metrics_port: int | None = None  # None: metrics off

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class ProcessGroup:
    run_dir: Path
    services: dict[str, Service] = field(default_factory=dict)
    # Environment every process of the group gets on top of this one's.
    env: dict[str, str] = field(default_factory=dict)

    def start(self, name: str, module: str, args: list[str], timeout_s: float = 180.0,
              env: dict[str, str] | None = None, credentials: grpc.ChannelCredentials | None = None,
              metrics_port: int = 0) -> Service:
        """Runs `python -m module --metrics-port P args --port-file F --metrics-port-file M`, waits for the
        port file and a SERVING health check. `metrics_port`: 0 = any free port (several services of a group
        never collide), -1 = off; a --metrics-port in `args` wins."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.run_dir / f"{name}.port"
        metrics_port_file = self.run_dir / f"{name}.metrics-port"
        port_file.unlink(missing_ok=True)
        metrics_port_file.unlink(missing_ok=True)
        log_path = self.run_dir / f"{name}.log"
        log = log_path.open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", module, "--metrics-port", str(metrics_port), *args, "--port-file", str(port_file),
             "--metrics-port-file", str(metrics_port_file)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env, **(env or {})},
            start_new_session=True,  # Ctrl-C in the terminal goes to `lmrec serve`, which stops children in order
        )
        deadline = time.monotonic() + timeout_s
        while not port_file.is_file() or not port_file.read_text().strip():
            if process.poll() is not None:
                raise StartupError(f"{name} exited with {process.returncode} during start; see {log_path}:\n"
                                   + tail(log_path))
            if time.monotonic() > deadline:
                process.kill()
                raise StartupError(f"{name} did not start within {timeout_s:.0f}s; see {log_path}")
            time.sleep(0.05)
        # A service writes its metrics port before it serves gRPC (lmrec/metrics_http.start_metrics).
        bound_metrics = int(metrics_port_file.read_text()) if metrics_port_file.is_file() else None
        service = Service(name, process, int(port_file.read_text()), log_path, bound_metrics)
        wait_serving(service.address, max(1.0, deadline - time.monotonic()), credentials)
        self.services[name] = service
        return service

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> None:
        service = self.services.pop(name, None)
        if service is None or service.process.poll() is not None:
            return
        service.process.send_signal(sig)
        try:
            service.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()

    def stop_all(self) -> None:
        # Gateway first, so no request reaches a worker that is already gone.
        for name in sorted(self.services, key=lambda n: n != "gateway"):
            self.stop(name)


def wait_serving(address: str, timeout_s: float, credentials: grpc.ChannelCredentials | None = None) -> None:
    """`credentials`: for a service serving TLS (with a client certificate where it demands one)."""
    deadline = time.monotonic() + timeout_s
    with (grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise StartupError(f"{address} never reported SERVING")
            time.sleep(0.1)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# The services' own defaults (their settings' metrics_port), repeated for the layout's shard arithmetic.
DEFAULT_METRICS_PORTS = {"gateway": 9091, "ranking": 9092, "retrieval": 9093}


@dataclass
class SystemLayout:
    """Where a local system keeps its state and which ports it asks for (0 = any free port; for metrics,
    -1 = off)."""

    state_dir: Path
    bundle_dir: Path
    shards: int = 1
    gateway_port: int = GATEWAY_PORT
    ranking_port: int = RANKING_PORT
    retrieval_port: int = RETRIEVAL_PORT
    # Prometheus /metrics of each service (README "Observability"); shard i on retrieval_metrics_port + 10 i.
    # None: the documented port (9091, 9092, 9093), or any free one where the gRPC port is any free one.
    gateway_metrics_port: int | None = None
    ranking_metrics_port: int | None = None
    retrieval_metrics_port: int | None = None
    # Every service's OTLP/gRPC trace collector (lmrec/tracing.py); None: no tracing.
    otlp_endpoint: str | None = None
    dimension: int = 384
    # Ranking on Ray Serve: replicas behind the gRPC front-end (`python -m ranking_service.ray_serve`).
    ranking_on_ray: bool = False
    # Extra flags per service name ("gateway", "ranking", "retrieval-0", ...), e.g. --metrics-port.
    extra_args: dict[str, list[str]] = field(default_factory=dict)

    def metrics_port(self, service: str, shard: int = 0) -> int:
        """The --metrics-port of "gateway", "ranking" or "retrieval" (shard `shard`)."""
        asked, grpc_port = {"gateway": (self.gateway_metrics_port, self.gateway_port),
                            "ranking": (self.ranking_metrics_port, self.ranking_port),
                            "retrieval": (self.retrieval_metrics_port, self.retrieval_port)}[service]
        if asked is None:
            asked = 0 if grpc_port == 0 else DEFAULT_METRICS_PORTS[service]
        return _offset(asked, shard)


def _offset(port: int, shard: int) -> int:
    """Shard `shard`'s port from the first shard's: 0 (any free) and -1 (off) stay as they are."""
    return port if port <= 0 else port + shard * 10


def _tracing_args(layout: SystemLayout) -> list[str]:
    return ["--otlp-endpoint", layout.otlp_endpoint] if layout.otlp_endpoint else []


def retrieval_data_dir(layout: SystemLayout, shard: int) -> Path:
    # One index per vector length: a bundle serving another length starts an empty index, which the
    # gateway fills from its catalogue (gateway/reindex.py), instead of failing on the old snapshot.
    return layout.state_dir / f"retrieval-{layout.dimension}d-{shard}"


def start_retrieval_shard(group: ProcessGroup, layout: SystemLayout, shard: int,
                          shard_count: int | None = None) -> Service:
    """Starts retrieval shard `shard` of `shard_count` (default: the layout's) on its data directory and
    port (`retrieval_port` + 10 * shard, metrics likewise), e.g. a shard that `lmrec reshard` is about to fill."""
    return group.start(f"retrieval-{shard}", "retrieval_service", [
        "--port", str(_offset(layout.retrieval_port, shard)), "--data-dir", str(retrieval_data_dir(layout, shard)),
        "--shard-index", str(shard), "--shard-count", str(shard_count or layout.shards),
        "--dimension", str(layout.dimension), *_tracing_args(layout),
        *layout.extra_args.get(f"retrieval-{shard}", [])],
        metrics_port=layout.metrics_port("retrieval", shard))


def start_system(group: ProcessGroup, layout: SystemLayout) -> Service:
    """Starts retrieval shards, the ranking worker and the gateway; returns the gateway."""
    shard_addresses = [start_retrieval_shard(group, layout, shard).address for shard in range(layout.shards)]
    ranking = group.start("ranking", "ranking_service.ray_serve" if layout.ranking_on_ray else "ranking_service", [
        "--port", str(layout.ranking_port), "--bundle-dir", str(layout.bundle_dir),
        "--state-dir", str(layout.state_dir / "ranking"), *_tracing_args(layout),
        *layout.extra_args.get("ranking", [])],
        metrics_port=layout.metrics_port("ranking"))
    return group.start("gateway", "gateway", [
        "--port", str(layout.gateway_port), "--ranking-address", ranking.address,
        "--retrieval-addresses", ",".join(shard_addresses), "--state-dir", str(layout.state_dir / "gateway"),
        *_tracing_args(layout), *layout.extra_args.get("gateway", [])], metrics_port=layout.metrics_port("gateway"))
