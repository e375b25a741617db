"""The ranking model as a Ray Serve deployment. Each replica runs the ordinary `RankingServicer`.

Methods are named after the RPCs. They take and return serialized protobuf bytes, so the wire format
between the front-end and a replica is the contract's own, and wrap the answer in a `ReplicaReply` that
names the replica (the front-end counts calls per replica) and carries a refusal's status (an
`LmrecError` becomes a status here, not a Ray task error).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from ray import serve

from lmrec.errors import LmrecError
from lmrec.v1 import ranking_service_pb2 as pb
from ranking_service.ray_serve.settings import RayRankingSettings
from ranking_service.ray_serve.store_sync import ItemStoreFollower
from ranking_service.settings import RankingSettings

log = logging.getLogger(__name__)

DEPLOYMENT_NAME = "RankingReplica"
REQUESTS = {"Encode": pb.EncodeRequest, "EncodeContext": pb.EncodeContextRequest, "Rank": pb.RankRequest,
            "ForgetItems": pb.ForgetItemsRequest, "GetModelInfo": pb.GetModelInfoRequest}


@dataclass(frozen=True)
class ReplicaReply:
    replica: str
    payload: bytes = b""
    code: str = ""  # grpc.StatusCode name when the servicer refused the call
    message: str = ""


class _CallContext:
    """The part of a gRPC servicer context that `RankingServicer` reads: the time left."""

    def __init__(self, timeout_s: float | None) -> None:
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())


class ReplicaMetrics:
    """`RankingMetrics` for the micro-batcher inside a replica, on Ray's metrics: each node's metrics agent
    exports them (as ray_lmrec_ranking_*, tagged with application, deployment and replica)."""

    def __init__(self) -> None:
        from ray.serve import metrics

        from lmrec.metrics_http import LATENCY_BUCKETS_S
        from ranking_service.metrics import BATCH_BUCKETS

        self.batch_texts = metrics.Histogram("lmrec_ranking_batch_texts", "Texts per ONNX Runtime call",
                                             boundaries=list(BATCH_BUCKETS))
        self.queue_depth = metrics.Gauge("lmrec_ranking_queue_depth", "Requests waiting for the model")
        self.queue_wait = metrics.Histogram("lmrec_ranking_queue_wait_seconds", "Time queued before the batch ran",
                                            boundaries=list(LATENCY_BUCKETS_S))
        self.model_run = metrics.Histogram("lmrec_ranking_model_run_seconds", "Wall time of one batch's model run",
                                           boundaries=list(LATENCY_BUCKETS_S))
        self.refused = metrics.Counter("lmrec_ranking_refused", "Requests refused because the queue was full")
        self.expired = metrics.Counter("lmrec_ranking_expired", "Queued requests dropped at their deadline")
        self._depth = lambda: 0

    def watch_queue(self, depth) -> None:
        self._depth = depth  # Ray gauges hold a value, not a callback: sampled per call and per batch

    def sample_queue(self) -> None:
        self.queue_depth.set(self._depth())

    def observe_batch(self, n_texts: int, waits_s, run_s: float) -> None:
        self.batch_texts.observe(n_texts)
        for wait in waits_s:
            self.queue_wait.observe(wait)
        self.model_run.observe(run_s)
        self.sample_queue()


class RankingReplica:
    """One replica: the plain worker's servicer and micro-batcher over its own model, and its hot swap.

    Like a plain worker, each replica watches the bundle directory (every `reload_interval_s`): when
    `lmrec train` has replaced the bundle, it loads the new one beside the serving model, warms it up,
    switches and drains, without a restart and without dropping a call. Replicas swap independently, a
    few seconds apart; meanwhile each encodes what a replica on the other version writes (store_sync).
    """

    async def __init__(self, worker_settings: dict[str, Any]) -> None:
        # Imported here: the replica process needs onnxruntime, the process that builds the app does not.
        from lmrec.logging_setup import configure_logging
        from ranking_service.hot_swap import BundleSwapper, Serving, ServingHolder, run_periodically
        from ranking_service.model import load_model
        from ranking_service.server import new_batcher
        from ranking_service.servicer import RankingServicer

        # Our loggers' INFO lines (model loaded, hot-swapped) go to the replica's stderr, which Ray keeps
        # in its worker logs; without this only warnings reach them.
        configure_logging("ranking-replica")
        settings = RankingSettings(**worker_settings)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        model = await asyncio.to_thread(load_model, settings)
        self._follower = self._follow(model)
        self._metrics = ReplicaMetrics()
        batcher = new_batcher(settings, model, self._metrics)
        batcher.start()
        self._holder = ServingHolder(Serving(model, batcher))
        self._servicer = RankingServicer(self._holder)
        self._watcher = None  # the watch task, held so it is not garbage-collected while it runs
        if settings.reload_interval_s:
            # Replicas share the item store and swap one after another: keep the previous version's rows.
            swapper = BundleSwapper(settings, self._holder, lambda m: new_batcher(settings, m, self._metrics),
                                    keep_previous_rows=True, on_swapped=self._on_swapped)
            self._watcher = asyncio.create_task(run_periodically(swapper.swap_if_new, settings.reload_interval_s))
        log.info("ranking replica %s ready: %s, %d items", self.replica_id, model.manifest.model_version,
                 len(model.store))

    @staticmethod
    def _follow(model) -> ItemStoreFollower:
        return ItemStoreFollower(model.store, model.store.path, model.manifest.model_version, model.encode_items)

    def _on_swapped(self, model) -> None:
        old, self._follower = self._follower, self._follow(model)
        old.close()

    async def _call(self, rpc: str, data: bytes, timeout_s: float | None) -> ReplicaReply:
        self._follower.catch_up()
        self._metrics.sample_queue()
        request = REQUESTS[rpc].FromString(data)
        try:
            response = await getattr(self._servicer, rpc)(request, _CallContext(timeout_s))
        except LmrecError as exc:
            return ReplicaReply(self.replica_id, code=exc.grpc_code.name, message=str(exc))
        return ReplicaReply(self.replica_id, payload=response.SerializeToString())

    async def Encode(self, data: bytes, timeout_s: float | None = None) -> ReplicaReply:
        return await self._call("Encode", data, timeout_s)

    async def EncodeContext(self, data: bytes, timeout_s: float | None = None) -> ReplicaReply:
        return await self._call("EncodeContext", data, timeout_s)

    async def Rank(self, data: bytes, timeout_s: float | None = None) -> ReplicaReply:
        return await self._call("Rank", data, timeout_s)

    async def ForgetItems(self, data: bytes, timeout_s: float | None = None) -> ReplicaReply:
        return await self._call("ForgetItems", data, timeout_s)

    async def GetModelInfo(self, data: bytes, timeout_s: float | None = None) -> ReplicaReply:
        return await self._call("GetModelInfo", data, timeout_s)


def replica_gpus(settings: RayRankingSettings) -> float:
    """GPUs per replica: as set, or one when the cluster has any (needs a connected Ray)."""
    if settings.replica_num_gpus is not None:
        return settings.replica_num_gpus
    import ray

    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def deployment_options(settings: RayRankingSettings, num_gpus: float) -> dict[str, Any]:
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "max_ongoing_requests": settings.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": settings.replica_num_cpus, "num_gpus": num_gpus},
    }
    if settings.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": settings.min_replicas, "max_replicas": settings.max_replicas,
            "initial_replicas": max(settings.min_replicas, 1),
            "target_ongoing_requests": settings.target_ongoing_requests}
    else:
        options["num_replicas"] = settings.num_replicas
    return options


def worker_settings(settings: RayRankingSettings, num_gpus: float) -> dict[str, Any]:
    """The plain worker's settings each replica loads its model with; paths absolute, threads per replica."""
    worker = settings.model_dump(include=set(RankingSettings.model_fields),
                                 exclude={"port_file", "metrics_port", "metrics_port_file"})
    worker["bundle_dir"] = str(settings.bundle_dir.resolve())
    worker["state_dir"] = str(settings.state_dir.resolve())
    if num_gpus == 0:
        worker["device"] = "cpu" if settings.device == "auto" else settings.device
    if settings.intra_op_threads == 0:  # ONNX Runtime would use every core in every replica
        worker["intra_op_threads"] = max(1, int(settings.replica_num_cpus))
    return worker


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder: `import_path: ranking_service.ray_serve.deployment:build_app` in a Serve config,
    with `args` holding `RayRankingSettings` fields (bundle_dir, state_dir, num_replicas, autoscaling ...)."""
    settings = RayRankingSettings(**args)
    gpus = replica_gpus(settings)
    return serve.deployment(RankingReplica).options(**deployment_options(settings, gpus)).bind(
        worker_settings(settings, gpus))
