"""Every deploy/ manifest parses; the KubeRay RayService names a real application builder and settings."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML reads the manifests")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted(DEPLOY.rglob("*.yaml"))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_parses_into_kubernetes_objects(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]


def test_rayservice_ranking():
    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "kuberay" / "rayservice-ranking.yaml").read_text())}
    spec = docs["RayService"]["spec"]
    (app,) = yaml.safe_load(spec["serveConfigV2"])["applications"]
    from ranking_service.ray_serve.settings import RayRankingSettings

    settings = RayRankingSettings(**app["args"])  # the builder validates the same way
    assert settings.autoscaling and settings.replica_num_gpus == 1 and settings.max_replicas >= 2
    module, _, attr = app["import_path"].partition(":")
    if importlib.util.find_spec("ray") is not None:
        assert callable(getattr(importlib.import_module(module), attr))

    head = spec["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"]
    frontend = next(c for c in head if c["name"] == "ranking-frontend")
    assert "--attach" in frontend["args"] and app["name"] in frontend["args"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert frontend[probe]["grpc"]["port"] == 50052
    (workers,) = spec["rayClusterConfig"]["workerGroupSpecs"]
    gpus = workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert gpus >= settings.max_replicas * settings.replica_num_gpus
    service = docs["Service"]["spec"]
    assert service["selector"] == docs["RayService"]["spec"]["rayClusterConfig"]["headGroupSpec"]["template"][
        "metadata"]["labels"]
