"""Process lifecycle: on SIGTERM a service reports NOT_SERVING and keeps answering for its drain delay,
then stops; the services `lmrec serve` starts die with it even when it is killed with SIGKILL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lmrec.v1 import gateway_service_pb2 as gw

pytestmark = pytest.mark.integration


def health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_sigterm_drains_serving_not_serving_then_stops(small_system_factory):
    system = small_system_factory(n_items=20, histories=False, extra_args={"gateway": ["--drain-s", "3"]})
    gateway = system.group.services["gateway"]
    gateway.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 2
    while health(gateway.address) == health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "still SERVING after SIGTERM"
        time.sleep(0.05)
    # Draining: NOT_SERVING, yet answering.
    answered = 0
    while time.monotonic() < deadline:
        assert len(system.stub.GetItems(gw.GetItemsRequest(item_ids=["1"]), timeout=5).items) == 1
        answered += 1
        time.sleep(0.1)
    assert answered >= 5 and gateway.process.poll() is None
    assert gateway.process.wait(timeout=15) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its dead parent's reaper) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_services_die_with_lmrec_serve_even_on_sigkill(tmp_path, bundle_dir):
    serve = subprocess.Popen(
        [sys.executable, "-m", "lmrec_tools.cli", "serve", "--bundle", str(bundle_dir), "--state-dir", str(tmp_path),
         "--port", "0", "--ranking-port", "0", "--retrieval-port", "0", "--load", "never", "--no-sample"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    pids, lines = [], []
    try:
        deadline = time.monotonic() + 240
        for line in serve.stdout:
            lines.append(line)
            if match := re.search(r"\(pid (\d+),", line):
                pids.append(int(match.group(1)))
            if "lmrec is serving" in line or time.monotonic() > deadline:
                break
        assert len(pids) == 3, "".join(lines)
        assert all(_alive(p) for p in pids)
        serve.send_signal(signal.SIGKILL)
        serve.wait(10)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in pids):
            assert time.monotonic() < deadline, f"orphans left: {[p for p in pids if _alive(p)]}"
            time.sleep(0.2)
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if serve.poll() is None:
            serve.kill()
