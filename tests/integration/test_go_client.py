"""The Go client (clients/go), built offline from Debian's Go packages with stubs generated from protos/,
calls UpsertItems, RecordFeedback and Recommend on a live system and reports the gateway's errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from lmrec_data.datasets import Dataset
from lmrec.v1 import gateway_service_pb2 as gw
from tests.integration.conftest import start, subset

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
GO_DIR = REPO_ROOT / "clients" / "go"
# vendor-debian.sh links the modules go.mod requires from here (golang-google-grpc-dev and friends).
DEBIAN_GOCODE = Path("/usr/share/gocode/src")
APT_PACKAGES = ("golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev "
                "protoc-gen-go protoc-gen-go-grpc protobuf-compiler")
# An address nothing listens on: port 1 is privileged and unused on test machines.
DEAD_TARGET = "127.0.0.1:1"
INDENT = " " * 15  # reasons are printed under their item, as by the Node client


def _missing_prerequisites() -> list[str]:
    missing = [tool for tool in ("go", "protoc-gen-go", "protoc-gen-go-grpc") if shutil.which(tool) is None]
    if not (DEBIAN_GOCODE / "google.golang.org" / "grpc" / "go.mod").is_file():
        missing.append(f"Debian's Go sources under {DEBIAN_GOCODE}")
    return missing


@pytest.fixture(scope="module")
def go_client(tmp_path_factory) -> Path:
    """The lmrec-go binary, built by clients/go/build.sh (stubs, vendor tree, go vet, go test, go build)."""
    missing = _missing_prerequisites()
    if missing:
        reason = f"the Go client needs {', '.join(missing)} (apt-get install {APT_PACKAGES})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    env = dict(os.environ)
    if shutil.which("protoc") is None:  # grpcio-tools' protoc, from the interpreter running the tests
        env["PROTOC"] = f"{sys.executable} -m grpc_tools.protoc"
    binary = tmp_path_factory.mktemp("go-client") / "lmrec-go"
    result = subprocess.run([str(GO_DIR / "build.sh"), str(binary)], capture_output=True, text=True,
                            timeout=480, env=env)
    assert result.returncode == 0, f"build.sh failed:\n{result.stdout}\n{result.stderr}"
    return binary


@pytest.fixture(scope="module")
def system(tmp_path_factory, bundle_dir, ml100k):
    """Its own system (the test writes items and events): 300 ML-100K items, no histories."""
    items_only = subset(ml100k, 300)
    running = start(tmp_path_factory.mktemp("go-system"), bundle_dir, Dataset(items_only.name, items_only.items, []))
    yield running
    running.close()


def run_client(binary: Path, *args: str, target: str = DEAD_TARGET) -> subprocess.CompletedProcess:
    command, *flags = args
    return subprocess.run([str(binary), command, "-target", target, "-timeout", "30s", *flags],
                          capture_output=True, text=True, timeout=60)


def ranked_item_ids(stdout: str) -> list[str]:
    """The item ids of lines like `  1. 50         0.9876  Star Wars (1977)`."""
    return [line.split()[1] for line in stdout.splitlines() if line[:4].strip().rstrip(".").isdigit()]


def test_go_client_upserts_records_feedback_and_recommends(go_client, system):
    suffix = uuid.uuid4().hex[:8]
    watched, wanted, user = f"go-seen-{suffix}", f"go-new-{suffix}", f"go-user-{suffix}"
    wanted_text = "A crew of talking penguins steers a yellow submarine under the Antarctic ice."
    upserted = run_client(
        go_client, "upsert",
        f'{{"item_id": "{watched}", "title": "Penguin Harbour (2031)", "text": "Penguins run a harbour.",'
        ' "attributes": {"genre": {"values": ["Animation"]}}}',
        f'{{"itemId": "{wanted}", "title": "Submarine Penguins (2032)", "text": "{wanted_text}",'
        ' "attributes": {"genre": {"values": ["Animation", "Adventure"]}}}',
        target=system.gateway_address)
    assert upserted.returncode == 0, f"stdout:\n{upserted.stdout}\nstderr:\n{upserted.stderr}"
    assert f"upserted 2 items: {watched}, {wanted}" in upserted.stdout
    stored = system.stub.GetItems(gw.GetItemsRequest(item_ids=[watched, wanted]), timeout=30)
    assert [(i.item_id, i.title) for i in stored.items] == [(watched, "Penguin Harbour (2031)"),
                                                             (wanted, "Submarine Penguins (2032)")]
    assert dict(stored.items[1].attributes)["genre"].values == ["Animation", "Adventure"]

    recorded = run_client(go_client, "feedback", "-user-id", user, "-item-id", watched, "-type", "click",
                          target=system.gateway_address)
    assert recorded.returncode == 0, f"stdout:\n{recorded.stdout}\nstderr:\n{recorded.stderr}"
    assert f"recorded 1 event: user {user} click item {watched}" in recorded.stdout
    history = system.stub.GetUserHistory(gw.GetUserHistoryRequest(user_id=user), timeout=30)
    assert [(e.item_id, e.event_type) for e in history.events] == [(watched, gw.EVENT_TYPE_CLICK)]

    k = 5
    answer = run_client(go_client, "recommend", "-user-id", user, "-k", str(k), "-query", wanted_text,
                        target=system.gateway_address)
    assert answer.returncode == 0, f"stdout:\n{answer.stdout}\nstderr:\n{answer.stderr}"
    assert "OK: answer passed all checks" in answer.stdout
    ids = ranked_item_ids(answer.stdout)
    assert len(ids) == k, answer.stdout
    assert wanted in ids, answer.stdout  # recommendable as soon as UpsertItems returned
    assert watched not in ids, answer.stdout  # the user's own history is never recommended
    assert not system.stub.GetItems(gw.GetItemsRequest(item_ids=ids), timeout=30).missing_item_ids
    reason_lines = [line for line in answer.stdout.splitlines() if line.startswith(INDENT + "- ")]
    assert len(reason_lines) >= k  # every item printed with at least one reason


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["recommend", "-user-id", "1", "-k", "-1"], "Recommend failed: INVALID_ARGUMENT: k: must be in 1..1000"),
        (["recommend", "-k", "3"], "Recommend failed: INVALID_ARGUMENT: user_id: must not be empty"),
        (["upsert", '{"item_id": "go-untitled"}'], "UpsertItems failed: INVALID_ARGUMENT"),
        (["feedback", "-user-id", "", "-item-id", "1", "-type", "view"], "RecordFeedback failed: INVALID_ARGUMENT"),
    ],
    ids=["negative-k", "no-user", "item-without-title-or-text", "event-without-user"],
)
def test_go_client_exits_non_zero_with_the_gateways_invalid_argument(go_client, system, args, status):
    result = run_client(go_client, *args, target=system.gateway_address)
    assert result.returncode == 1, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert status in result.stderr


def test_go_client_exits_non_zero_when_the_gateway_is_unreachable(go_client):
    result = run_client(go_client, "recommend", "-user-id", "1", "-k", "3")
    assert result.returncode == 1
    assert "Recommend failed: UNAVAILABLE" in result.stderr


@pytest.mark.parametrize("args", [["recommend", "-k", "ten"], ["recommend", "-user-id", "1", "extra"],
                                  ["feedback", "-user-id", "1", "-item-id", "2", "-type", "like"], ["upsert"],
                                  ["upsert", "{not json"], ["rank"]])
def test_go_client_rejects_bad_arguments_with_exit_code_2(go_client, args):
    result = run_client(go_client, *args)
    assert result.returncode == 2, result.stderr
    assert "usage: lmrec-go" in result.stderr
