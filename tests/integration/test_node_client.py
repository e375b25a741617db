"""The client examples (Node.js and Python) run against the live system and pass their own checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = REPO_ROOT / "clients" / "node"
SCRIPT = NODE_DIR / "recommend.js"
PYTHON_EXAMPLE = REPO_ROOT / "clients" / "python_example.py"
# An address nothing listens on: port 1 is privileged and unused on test machines.
DEAD_TARGET = "127.0.0.1:1"


@pytest.fixture(scope="module")
def node() -> str:
    node_bin, npm_bin = shutil.which("node"), shutil.which("npm")
    if node_bin is None or npm_bin is None:
        pytest.skip("node and npm are needed for the Node.js client (not on PATH)")
    installed = all((NODE_DIR / "node_modules" / "@grpc" / pkg / "package.json").is_file()
                    for pkg in ("grpc-js", "proto-loader"))
    if not installed:
        # npm ci installs exactly the committed lock file; it needs the npm registry or a warm cache.
        result = subprocess.run([npm_bin, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                                capture_output=True, text=True, timeout=480)
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
    return node_bin


def _run_node(node: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([node, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "extra",
    [
        ["--user-id", "1", "-k", "10"],
        ["--user-id", "42", "-k", "5", "--query", "a funny animated movie for kids"],
        ["--user-id", "7", "-k", "10", "--genre", "Comedy"],
        ["--user-id", "node-client-cold-user", "-k", "3", "--query", "dark sci-fi thriller"],
        ["--user-id", "1", "-k", "10", "--diversity", "0.5", "--scenario", "home"],
    ],
    ids=["known-user", "query", "genre-filter", "cold-user", "diversity-scenario"],
)
def test_node_client_gets_a_valid_answer(node, lmrec_system, extra):
    result = _run_node(node, "--target", lmrec_system.gateway_address, "--deadline-ms", "30000", *extra)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "OK: answer passed all checks" in result.stdout
    k = int(extra[extra.index("-k") + 1])
    ranked_lines = [line for line in result.stdout.splitlines() if line[:4].strip().rstrip(".").isdigit()]
    assert 1 <= len(ranked_lines) <= k
    reason_lines = [line for line in result.stdout.splitlines() if line.startswith(" " * 15 + "- ")]
    assert len(reason_lines) >= len(ranked_lines)  # every item printed with at least one reason


def test_node_client_exits_non_zero_when_the_gateway_is_unreachable(node):
    result = _run_node(node, "--target", DEAD_TARGET, "--user-id", "1", "-k", "3", "--deadline-ms", "2000")
    assert result.returncode == 1
    assert "Recommend failed: UNAVAILABLE" in result.stderr


@pytest.mark.parametrize("bad", [["-k", "0", "--user-id", "1"], ["--user-id", "1", "--nope"], ["-k", "3"],
                                 ["--user-id", "1", "--diversity", "2"]])
def test_node_client_rejects_bad_arguments_with_exit_code_2(node, bad):
    result = _run_node(node, *bad)
    assert result.returncode == 2, result.stderr
    assert "usage:" in result.stderr


def test_python_example_gets_a_valid_answer(lmrec_system):
    result = subprocess.run(
        [sys.executable, str(PYTHON_EXAMPLE), "--target", lmrec_system.gateway_address, "--user-id", "1",
         "-k", "10", "--query", "dark sci-fi thriller", "--timeout", "30"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "OK: answer passed all checks" in result.stdout
