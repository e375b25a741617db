"""The gRPC face of the Ray Serve ranking tier: RankingService + grpc.health.v1 + reflection.

Ray's own gRPC proxy only offers a custom Healthz, so the gateway and Kubernetes probes talk to this
process instead. It forwards each call to the `RankingReplica` deployment through a DeploymentHandle
(Serve picks the replica) and, when the replica dies under the call, sends it again — Serve has by then
taken the dead replica out of rotation — until the caller's deadline. Every RPC is idempotent (Encode
upserts, ForgetItems deletes), so sending one twice is safe.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
import os
import time
from typing import TYPE_CHECKING

import grpc
from google.protobuf.message import Message
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import ReplicaUnavailableError

from lmrec.errors import DeadlineExceeded, LmrecError
from lmrec.grpc_server import die_with_parent
from lmrec.logging_setup import configure_logging
from lmrec.service import Listening, Running, ServiceSpec, listen, run_service
from lmrec.service_flags import settings_from_flags
from lmrec.v1 import ranking_service_pb2 as pb
from lmrec.v1 import ranking_service_pb2_grpc as pb_grpc
from ranking_service.metrics import FrontendMetrics
from ranking_service.ray_serve.deployment import ReplicaReply
from ranking_service.ray_serve.settings import RayRankingSettings
from ranking_service.server import SERVICE_NAME, worker_parser

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle

log = logging.getLogger(__name__)


class ReplicaRefused(LmrecError):
    """A replica's servicer refused the call (bad argument, queue full, deadline): its status, passed on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.grpc_code = grpc.StatusCode[code]


def replica_died(exc: BaseException) -> str | None:
    """The failure's name when the replica (not the request) failed, so another replica may answer."""
    if isinstance(exc, RayTaskError) and isinstance(exc.cause, RayActorError):
        exc = exc.cause
    if isinstance(exc, (RayActorError, ReplicaUnavailableError)):
        return type(exc).__name__
    return None


class RayRankingFrontend(pb_grpc.RankingServiceServicer):
    def __init__(self, handle: DeploymentHandle, default_timeout_s: float, retry_backoff_s: float,
                 metrics: FrontendMetrics | None = None) -> None:
        self._handle = handle
        self._default_timeout_s = default_timeout_s
        self._backoff_s = retry_backoff_s
        self._metrics = metrics

    async def _forward(self, rpc: str, request: Message, context, response_cls: type[Message]) -> Message:
        started = time.perf_counter()
        try:
            reply = await self._call_with_failover(rpc, request.SerializeToString(), context.time_remaining())
        except LmrecError as exc:
            if self._metrics is not None:
                self._metrics.errors.labels(rpc, exc.grpc_code.name).inc()
            raise
        if self._metrics is not None:
            self._metrics.calls.labels(rpc, reply.replica).inc()
            self._metrics.latency.labels(rpc).observe(time.perf_counter() - started)
        return response_cls.FromString(reply.payload)

    async def _call_with_failover(self, rpc: str, data: bytes, time_remaining: float | None) -> ReplicaReply:
        deadline = time.monotonic() + (self._default_timeout_s if time_remaining is None else time_remaining)
        attempts = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(f"{rpc}: deadline passed after {attempts} attempt(s) on ranking replicas")
            attempts += 1
            response = getattr(self._handle, rpc).remote(data, left)
            try:
                reply: ReplicaReply = await asyncio.wait_for(response, left)
            except TimeoutError:
                response.cancel()
                continue  # the loop's deadline check raises DEADLINE_EXCEEDED
            except Exception as exc:
                failure = replica_died(exc)
                if failure is None:
                    raise
                log.warning("%s: replica failed (%s), sending the call again (attempt %d)", rpc, failure, attempts)
                if self._metrics is not None:
                    self._metrics.retries.labels(rpc, failure).inc()
                await asyncio.sleep(min(self._backoff_s, max(0.0, deadline - time.monotonic())))
                continue
            if reply.code:
                raise ReplicaRefused(reply.code, reply.message)
            return reply

    async def Encode(self, request, context):
        return await self._forward("Encode", request, context, pb.EncodeResponse)

    async def EncodeContext(self, request, context):
        return await self._forward("EncodeContext", request, context, pb.EncodeContextResponse)

    async def Rank(self, request, context):
        return await self._forward("Rank", request, context, pb.RankResponse)

    async def ForgetItems(self, request, context):
        return await self._forward("ForgetItems", request, context, pb.ForgetItemsResponse)

    async def GetModelInfo(self, request, context):
        return await self._forward("GetModelInfo", request, context, pb.GetModelInfoResponse)


def create_server(settings: RayRankingSettings, handle: DeploymentHandle,
                  metrics: FrontendMetrics | None = None) -> Listening:
    """Builds the front-end server, bound, not yet started."""
    frontend = RayRankingFrontend(handle, settings.default_timeout_s, settings.retry_backoff_ms / 1000, metrics)
    return listen(settings, [SERVICE_NAME], lambda server: pb_grpc.add_RankingServiceServicer_to_server(frontend, server),
                  "ranking (Ray front-end)", rpc_metrics=metrics.rpc if metrics is not None else None)


def connect_ray(settings: RayRankingSettings) -> bool:
    """Joins `ray_address` or starts a small local cluster; returns True when this process started it."""
    import ray

    if ray.is_initialized():
        return False
    if settings.ray_address:
        ray.init(address=settings.ray_address, log_to_driver=False)
        return False
    start_local_ray(num_cpus=settings.ray_num_cpus, include_dashboard=False, log_to_driver=False)
    return True


# Ray waits 30 s for a new head's GCS to publish its port; on a busy 2-core machine it has taken longer.
LOCAL_GCS_PORT_WAIT_S = "120"


def start_local_ray(**init_options) -> None:
    """`ray.init` of a new local cluster, with a start-up wait that survives a loaded machine (an
    operator's own RAY_gcs_server_port_wait_time_s wins), and one more try when its GCS never came up."""
    import ray

    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", LOCAL_GCS_PORT_WAIT_S)
    try:
        ray.init(**init_options)
    except RuntimeError as exc:
        # Seen in CI: a head started a second after the previous one stopped never launched its GCS (no
        # GCS log at all); the next start came up at once.
        if "Timed out waiting for file" not in str(exc):
            raise
        log.warning("the local Ray cluster's GCS did not start (%s); starting the cluster again", exc)
        ray.shutdown()
        ray.init(**init_options)


def deploy_or_attach(settings: RayRankingSettings) -> DeploymentHandle:
    """Deploys the ranking application (and waits for its replicas), or attaches to a running one."""
    from ray import serve

    from ranking_service.ray_serve.deployment import DEPLOYMENT_NAME, build_app

    if settings.deploy:
        serve.start(proxy_location="Disabled")  # the front-end is the only way in; no HTTP proxy
        serve.run(build_app(settings.model_dump()), name=settings.app_name, route_prefix=None)
    else:
        wait_running(settings.app_name, settings.default_timeout_s * 10)
    return serve.get_deployment_handle(DEPLOYMENT_NAME, settings.app_name)


def wait_running(app_name: str, timeout_s: float) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        app = serve.status().applications.get(app_name)
        if app is not None and app.status == "RUNNING":
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"Serve application {app_name!r} is not RUNNING after {timeout_s:.0f}s "
                             f"(status: {app.status if app else 'absent'})")
        time.sleep(1.0)


async def serve_frontend(settings: RayRankingSettings) -> None:
    async def build(metrics: FrontendMetrics | None, resources: AsyncExitStack) -> Running:
        import ray
        from ray import serve

        if connect_ray(settings):
            resources.callback(ray.shutdown)
            resources.callback(serve.shutdown)  # closed first: the stack unwinds in reverse
        handle = await asyncio.to_thread(deploy_or_attach, settings)
        if settings.deploy:
            resources.callback(serve.delete, settings.app_name)
        return Running(create_server(settings, handle, metrics), f"Serve app {settings.app_name}")

    await run_service(settings, ServiceSpec("ranking-ray", FrontendMetrics), build)


def parse_settings(argv: list[str] | None) -> RayRankingSettings:
    parser = worker_parser("lmrec-ranking-ray", "lmrec ranking tier on Ray Serve")
    # A shorter name for --no-deploy, as the KubeRay manifests spell it.
    parser.add_argument("--attach", dest="deploy", action="store_const", const=False,
                        help="use an application deployed elsewhere (e.g. by a KubeRay RayService)")
    return settings_from_flags(parser, argv, RayRankingSettings)


def main(argv: list[str] | None = None) -> None:
    configure_logging("ranking-ray")
    die_with_parent()
    asyncio.run(serve_frontend(parse_settings(argv)))


if __name__ == "__main__":
    main()
