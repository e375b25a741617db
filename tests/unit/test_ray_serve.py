"""The Ray Serve tier without a cluster: the front-end's failover (stand-in DeploymentHandle), replica options."""

from __future__ import annotations

import asyncio

import grpc
import pytest

pytest.importorskip("ray.serve", reason="the Ray Serve front-end needs lmrec[ray]")
from prometheus_client import CollectorRegistry  # noqa: E402
from ray.exceptions import ActorDiedError, ActorUnavailableError  # noqa: E402

from lmrec.errors import DeadlineExceeded  # noqa: E402
from lmrec.v1 import ranking_service_pb2 as pb  # noqa: E402
from ranking_service.metrics import FrontendMetrics  # noqa: E402
from ranking_service.ray_serve.deployment import ReplicaReply, deployment_options, worker_settings  # noqa: E402
from ranking_service.ray_serve.frontend import RayRankingFrontend, ReplicaRefused, start_local_ray  # noqa: E402
from ranking_service.ray_serve.settings import RayRankingSettings  # noqa: E402


class FakeResponse:
    def __init__(self, outcome) -> None:
        self._outcome = outcome
        self.cancelled = False

    def __await__(self):
        if isinstance(self._outcome, float):  # a replica that hangs for this long
            yield from asyncio.sleep(self._outcome).__await__()
            return ReplicaReply("slow")
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        yield from asyncio.sleep(0).__await__()
        return self._outcome

    def cancel(self) -> None:
        self.cancelled = True


class FakeHandle:
    """Answers each call with the next outcome: a ReplicaReply, an exception, or a hang (seconds)."""

    def __init__(self, *outcomes) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[tuple[str, float]] = []

    def __getattr__(self, rpc: str):
        handle = self

        class Method:
            @staticmethod
            def remote(data: bytes, timeout_s: float) -> FakeResponse:
                handle.sent.append((rpc, timeout_s))
                return FakeResponse(handle.outcomes.pop(0) if handle.outcomes else ActorDiedError())

        return Method


class Context:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self):
        return self.remaining


def info_reply(replica: str) -> ReplicaReply:
    return ReplicaReply(replica, payload=pb.GetModelInfoResponse(model_version="m1").SerializeToString())


def frontend(handle: FakeHandle) -> tuple[RayRankingFrontend, CollectorRegistry]:
    registry = CollectorRegistry()
    return RayRankingFrontend(handle, default_timeout_s=5.0, retry_backoff_s=0.001,
                              metrics=FrontendMetrics(registry)), registry


def test_a_call_whose_replica_dies_is_answered_by_another():
    handle = FakeHandle(ActorDiedError(), ActorUnavailableError("gone", None), info_reply("r2"))
    service, registry = frontend(handle)
    reply = asyncio.run(service.GetModelInfo(pb.GetModelInfoRequest(), Context(2.0)))
    assert reply.model_version == "m1" and len(handle.sent) == 3
    assert all(timeout <= 2.0 for _, timeout in handle.sent)  # each attempt gets only what is left
    value = registry.get_sample_value
    assert value("lmrec_ranking_frontend_retries_total", {"method": "GetModelInfo", "reason": "ActorDiedError"}) == 1
    assert value("lmrec_ranking_frontend_calls_total", {"method": "GetModelInfo", "replica": "r2"}) == 1


def test_a_refusal_is_passed_on_with_its_status_and_not_retried():
    handle = FakeHandle(ReplicaReply("r1", code="INVALID_ARGUMENT", message="k: must be in 1..1000, got 0"))
    service, registry = frontend(handle)
    with pytest.raises(ReplicaRefused) as info:
        asyncio.run(service.Rank(pb.RankRequest(), Context(2.0)))
    assert info.value.grpc_code == grpc.StatusCode.INVALID_ARGUMENT and "k: must be" in str(info.value)
    assert len(handle.sent) == 1
    assert registry.get_sample_value("lmrec_ranking_frontend_errors_total",
                                     {"method": "Rank", "code": "INVALID_ARGUMENT"}) == 1


def test_failover_stops_at_the_callers_deadline():
    service, _ = frontend(FakeHandle())  # every replica dies
    with pytest.raises(DeadlineExceeded, match="attempt"):
        asyncio.run(service.Rank(pb.RankRequest(), Context(0.05)))


def test_a_hung_replica_is_cancelled_at_the_deadline():
    handle = FakeHandle(5.0)
    service, _ = frontend(handle)
    with pytest.raises(DeadlineExceeded):
        asyncio.run(service.Rank(pb.RankRequest(), Context(0.05)))


def test_other_errors_are_not_retried():
    handle = FakeHandle(ValueError("bug"))
    service, _ = frontend(handle)
    with pytest.raises(ValueError):
        asyncio.run(service.Rank(pb.RankRequest(), Context(1.0)))
    assert len(handle.sent) == 1


def test_fixed_replicas_on_cpu():
    settings = RayRankingSettings(num_replicas=2, replica_num_cpus=1)
    options = deployment_options(settings, num_gpus=0)
    assert options["num_replicas"] == 2 and "autoscaling_config" not in options
    assert options["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0}
    worker = worker_settings(settings, num_gpus=0)
    # No GPU for the replica: never pick CUDA; ONNX Runtime threads = the replica's CPUs, not the machine's.
    assert worker["device"] == "cpu" and worker["intra_op_threads"] == 1
    assert worker["bundle_dir"].startswith("/") and "port_file" not in worker


def test_autoscaling_with_a_gpu_per_replica():
    settings = RayRankingSettings(autoscaling=True, min_replicas=1, max_replicas=4, target_ongoing_requests=8,
                                  replica_num_cpus=2)
    options = deployment_options(settings, num_gpus=1)
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "initial_replicas": 1,
                                             "target_ongoing_requests": 8}
    assert options["ray_actor_options"]["num_gpus"] == 1
    assert worker_settings(settings, num_gpus=1)["device"] == "auto"  # the replica's GPU: CUDA when usable


def test_bad_replica_range_stops_at_start():
    with pytest.raises(ValueError, match="min_replicas"):
        RayRankingSettings(autoscaling=True, min_replicas=5, max_replicas=2)


def test_a_local_cluster_whose_gcs_never_came_up_is_started_once_more(monkeypatch):
    import ray

    calls = []

    def init(**options):
        calls.append(("init", options))
        if len(calls) == 1:
            raise RuntimeError("Timed out waiting for file /tmp/ray/session_x/gcs_server_port_y")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append(("shutdown", {})))
    start_local_ray(num_cpus=1)
    assert calls == [("init", {"num_cpus": 1}), ("shutdown", {}), ("init", {"num_cpus": 1})]

    def refuse(**options):
        raise RuntimeError("some other start failure")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(RuntimeError, match="some other"):  # anything else is not retried
        start_local_ray(num_cpus=1)
