"""Services started by the supervisor (what `lmrec serve` runs) die with it, even when it is SIGKILLed:
no orphan keeps serving and holding its port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SUPERVISOR = """
import sys, time
from pathlib import Path
from lmrec.supervisor import ProcessGroup, SystemLayout, start_retrieval_shard
state = Path(sys.argv[1])
layout = SystemLayout(state_dir=state, bundle_dir=state, retrieval_port=0, dimension=8)
service = start_retrieval_shard(ProcessGroup(state / "run"), layout, 0)
print(service.process.pid, service.port, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead: it only waits for its (here: init's) wait().
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
def test_a_service_dies_with_a_sigkilled_supervisor(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        child_pid, _port = map(int, parent.stdout.readline().split())
        assert _alive(child_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 20
        while _alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child_pid), "the retrieval service outlived its SIGKILLed supervisor"
    finally:
        parent.kill()
