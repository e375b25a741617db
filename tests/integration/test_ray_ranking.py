"""The ranking tier on a real local Ray cluster: two CPU replicas of the Serve deployment behind the
gRPC front-end, with the gateway in front (`lmrec serve --ray`, as the supervisor starts it).

Checks that calls spread over both replicas, that items encoded through one replica are known to the
other (shared SQLite store), that a replica killed with `ray.kill` under load is replaced while the
client sees no failed call, and that a newly trained bundle is hot-swapped into every replica under load.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import grpc
import pytest

ray = pytest.importorskip("ray", reason="the Ray Serve ranking tier needs lmrec[ray] (ray[serve])")
serve = pytest.importorskip("ray.serve", reason="the Ray Serve ranking tier needs lmrec[ray] (ray[serve])")

from lmrec.v1 import common_pb2, gateway_service_pb2 as gw  # noqa: E402
from lmrec.v1 import ranking_service_pb2 as rk, ranking_service_pb2_grpc as rk_grpc  # noqa: E402
from ranking_service.ray_serve.deployment import DEPLOYMENT_NAME  # noqa: E402
from ranking_service.ray_serve.frontend import start_local_ray  # noqa: E402
from tests.conftest import link_bundle
from tests.integration.conftest import replace_with_new_version  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.timeout(600)]

APP = "lmrec-ranking-test"
REPLICA_PREFIX = f"SERVE_REPLICA::{APP}#{DEPLOYMENT_NAME}#"


@dataclass
class RayCluster:
    address: str
    metrics_port: int  # where its metrics agent exports the replicas' metrics


@pytest.fixture(scope="module")
def ray_cluster():
    """A small local cluster this test owns: 3 logical CPUs (2 replicas + room for a replacement)."""
    metrics_port = free_port()
    for attempt in (1, 2):
        try:
            start_local_ray(num_cpus=3, include_dashboard=False, log_to_driver=False, _metrics_export_port=metrics_port)
            break
        except Exception as exc:  # Ray gives its raylet a fixed 30 s to register; a loaded CI box may need more
            ray.shutdown()
            if attempt == 2 or not any(s in str(exc) for s in ("timed out during startup", "Timed out waiting")):
                raise
    try:
        yield RayCluster(ray.get_runtime_context().gcs_address, metrics_port)
    finally:
        serve.shutdown()
        ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replica_actor_names() -> set[str]:
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(REPLICA_PREFIX)}


def running_replicas() -> int:
    app = serve.status().applications.get(APP)
    if app is None:
        return 0
    return app.deployments[DEPLOYMENT_NAME].replica_states.get("RUNNING", 0)


def by_replica(samples, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (sample, labels), value in samples.items():
        if sample == name:
            replica = dict(labels)["replica"]
            out[replica] = out.get(replica, 0) + value
    return out


def calls_by_replica(samples) -> dict[str, float]:
    return by_replica(samples, "lmrec_ranking_frontend_calls_total")


def metric_sum(samples, name: str) -> float:
    return sum(value for (n, _), value in samples.items() if n == name)


def rank_request(items: list[str], user: int) -> rk.RankRequest:
    return rk.RankRequest(context=common_pb2.UserContext(
        user_id=str(user), history_item_ids=items[user % 50: user % 50 + 5], query="a funny animated movie"),
        candidate_item_ids=items)


class Load:
    """Four client threads calling Rank and Encode on the front-end until stopped; counts what failed."""

    def __init__(self, stub, items: list[str]) -> None:
        self.ok, self.failed, self.encoded = 0, [], []
        self._stub, self._items = stub, items
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(4)]

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self, worker: int) -> None:
        user = worker
        while not self._stop.is_set():
            user += 4
            try:
                if user % 8 < 4:  # a longer model call now and then, so a kill or swap is likely to catch one
                    item_id = f"load-item-{user}"
                    texts = [f"load text {user}-{n} about a space adventure" for n in range(31)]
                    inputs = [rk.EncodeInput(item_id=item_id, text=f"A glacier kayak trip, part {user}"),
                              *(rk.EncodeInput(text=t) for t in texts)]
                    assert len(self._stub.Encode(rk.EncodeRequest(inputs=inputs), timeout=10).vectors) == 32
                    with self._lock:
                        self.encoded.append(item_id)
                else:
                    reply = self._stub.Rank(rank_request(self._items, user), timeout=10)
                    assert len(reply.scores) == 300 and not reply.unknown_item_ids
                with self._lock:
                    self.ok += 1
            except Exception as exc:  # counted: the tests assert there are none
                with self._lock:
                    self.failed.append(repr(exc))


def test_replicas_share_load_survive_a_kill_swap_bundles_and_serve_the_gateway(
        ray_cluster, small_system_factory, metrics_scraper, bundle_dir, tmp_path):
    free_port, scrape = metrics_scraper
    metrics_port = free_port()
    watched = tmp_path / "bundle"  # a copy, replaced later by a "newly trained" one
    link_bundle(bundle_dir, watched)
    system = small_system_factory(histories=False, ranking_on_ray=True, bundle=watched, extra_args={"ranking": [
        "--ray-address", ray_cluster.address, "--app-name", APP, "--num-replicas", "2", "--replica-num-cpus", "1",
        "--metrics-port", str(metrics_port)]})
    items = [i.item_id for i in system.stub.GetItems(gw.GetItemsRequest(
        item_ids=[str(n) for n in range(1, 301)]), timeout=10).items]
    assert len(items) == 300
    channel = grpc.insecure_channel(system.group.services["ranking"].address)
    stub = rk_grpc.RankingServiceStub(channel)

    # Spread, and one store: the catalogue was encoded through both replicas; each knows every item.
    for user in range(40):
        reply = stub.Rank(rank_request(items, user), timeout=10)
        assert not reply.unknown_item_ids and len(reply.scores) == 300
    spread = calls_by_replica(scrape(metrics_port))
    assert len(spread) == 2 and min(spread.values()) >= 5, spread

    # A write on one replica is seen by the other at once.
    stub.Encode(rk.EncodeRequest(inputs=[rk.EncodeInput(item_id="ray-new-1", text="A kayak trip across glaciers")]),
                timeout=10)
    for user in range(6):
        assert not stub.Rank(rank_request([*items[:20], "ray-new-1"], user), timeout=10).unknown_item_ids

    # Kill one replica under load from four client threads.
    before = replica_actor_names()
    assert len(before) == 2
    with Load(stub, items) as load:
        time.sleep(2.0)
        victim = sorted(before)[0]
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        killed_at = time.monotonic()
        replaced_after = None
        while time.monotonic() - killed_at < 120:
            names = replica_actor_names()
            if victim not in names and len(names - before) == 1 and running_replicas() == 2:
                replaced_after = time.monotonic() - killed_at
                break
            time.sleep(0.5)
        time.sleep(3.0)  # keep the load on while the new replica takes its share
    samples = scrape(metrics_port)
    retries = metric_sum(samples, "lmrec_ranking_frontend_retries_total")
    print(f"\nload during the kill: {load.ok} calls ok, {len(load.failed)} failed, {retries:.0f} retried on another "
          f"replica; replacement RUNNING after {replaced_after}s; calls by replica {calls_by_replica(samples)}")
    assert replaced_after is not None, "the killed replica was not replaced within 120 s"
    assert not load.failed, load.failed[:5]
    assert load.ok > 20
    new_replica = (replica_actor_names() - before).pop().removeprefix(REPLICA_PREFIX)
    for user in range(20):
        stub.Rank(rank_request(items, user), timeout=10)
    assert calls_by_replica(scrape(metrics_port)).get(new_replica, 0) > 0, "the new replica got no calls"

    # Each replica's micro-batcher reports through Ray's metrics agent (exported every few seconds).
    batches: dict[str, float] = {}
    deadline = time.monotonic() + 45
    while len(batches) < 2 and time.monotonic() < deadline:
        time.sleep(2)
        batches = by_replica(scrape(ray_cluster.metrics_port), "ray_lmrec_ranking_batch_texts_count")
    print(f"batches by replica (Ray metrics agent): {batches}")
    assert len(batches) >= 2 and all(count > 0 for count in batches.values()), batches

    # The gateway ranks through the front-end: answers are ranked, not degraded.
    for user in ("1", "2", "3"):
        response = system.stub.Recommend(gw.RecommendRequest(user_id=user, k=10, query="space adventure"), timeout=10)
        assert not response.degraded, response.degraded_reason
        assert response.source == "ranked" and len(response.items) == 10



    # Hot swap: `lmrec train` replaces the bundle; the front-end finds it and Serve reconfigures both
    # replicas in place (no restart) while the load goes on.
    old_version = model_versions(stub, 1).pop()
    replicas = replica_actor_names()
    with Load(stub, items) as load:
        time.sleep(1.0)
        new_version = replace_with_new_version(watched, bundle_dir, tmp_path)
        started = time.monotonic()
        swapped_after = None
        while time.monotonic() - started < 180:
            # Serve may route a short run of calls to one replica; enough calls reach every replica.
            if model_versions(stub, 32) == {new_version}:
                swapped_after = time.monotonic() - started
                break
            time.sleep(0.5)
        time.sleep(2.0)
    print(f"load during the swap: {load.ok} calls ok, {len(load.failed)} failed; every replica on the new "
          f"model after {swapped_after}s")
    assert swapped_after is not None, f"replicas still answer {model_versions(stub, 8)}, not {new_version}"
    assert new_version != old_version and not load.failed, load.failed[:5]
    assert replica_actor_names() == replicas, "a hot swap must not restart replicas"
    # Items written through either model during the swap are known to both replicas on the new one.
    assert load.encoded
    for user in range(8):
        reply = stub.Rank(rank_request([*items[:20], *load.encoded], user), timeout=10)
        assert not reply.unknown_item_ids, reply.unknown_item_ids
    response = system.stub.Recommend(gw.RecommendRequest(user_id="1", k=10, query="space adventure"), timeout=10)
    assert not response.degraded and response.model_version == new_version
    channel.close()


def model_versions(stub, calls: int) -> set[str]:
    """The model versions `calls` GetModelInfo calls through the front-end saw (spread over replicas)."""
    return {stub.GetModelInfo(rk.GetModelInfoRequest(), timeout=10).model_version for _ in range(calls)}


@pytest.mark.gpu
def test_gpu_replica_runs_on_cuda(ray_cluster, bundle_dir, tmp_path):
    """With GPUs in the cluster, a replica gets one (replica_num_gpus unset) and runs ONNX on CUDA."""
    if ray.cluster_resources().get("GPU", 0) < 1:
        pytest.skip("no GPU in this Ray cluster")
    from ranking_service.ray_serve.deployment import build_app

    handle = serve.run(build_app({"bundle_dir": str(bundle_dir), "state_dir": str(tmp_path), "num_replicas": 1}),
                       name="lmrec-ranking-gpu-test", route_prefix=None)
    try:
        reply = handle.GetModelInfo.remote(rk.GetModelInfoRequest().SerializeToString(), 30).result()
        info = rk.GetModelInfoResponse.FromString(reply.payload)
        assert info.execution_provider == "CUDAExecutionProvider" and info.precision == "fp16"
    finally:
        serve.delete("lmrec-ranking-gpu-test")
