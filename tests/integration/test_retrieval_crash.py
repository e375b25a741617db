"""A retrieval server killed with SIGKILL mid-stream keeps every write it acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from lmrec.v1 import common_pb2, retrieval_service_pb2 as pb, retrieval_service_pb2_grpc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

REPO = Path(__file__).resolve().parents[2]
DIM = 16


def start(data_dir: Path, port_file: Path) -> tuple[subprocess.Popen, retrieval_service_pb2_grpc.RetrievalServiceStub, grpc.Channel]:
    port_file.unlink(missing_ok=True)
    env = {**os.environ, "LMREC_RETRIEVAL_SNAPSHOT_EVERY": "25", "LMREC_RETRIEVAL_INITIAL_CAPACITY": "64"}
    process = subprocess.Popen(
        [sys.executable, "-m", "retrieval_service", "--port", "0", "--port-file", str(port_file),
         "--data-dir", str(data_dir), "--dimension", str(DIM)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        assert process.poll() is None, "server exited during start"
        assert time.monotonic() < deadline, "server did not write its port"
        time.sleep(0.05)
    channel = grpc.insecure_channel(f"127.0.0.1:{port_file.read_text().strip()}")
    grpc.channel_ready_future(channel).result(timeout=10)
    return process, retrieval_service_pb2_grpc.RetrievalServiceStub(channel), channel


def test_acknowledged_writes_survive_kill_9(tmp_path):
    data_dir, port_file = tmp_path / "data", tmp_path / "port"
    process, stub, channel = start(data_dir, port_file)
    rng = np.random.default_rng(7)
    acked: dict[str, np.ndarray] = {}
    deleted: set[str] = set()
    # A delete in flight at the kill was not acknowledged, yet the server may have logged it.
    maybe_deleted: set[str] = set()
    killer = threading.Timer(1.5, lambda: os.kill(process.pid, signal.SIGKILL))
    killer.start()
    batch_no = 0
    try:
        while True:
            ids = [f"b{batch_no}-{i}" for i in range(8)]
            vectors = rng.standard_normal((8, DIM)).astype(np.float32)
            items = [
                pb.IndexedItem(item_id=i, vector=v.tolist(), attributes={"batch": common_pb2.AttributeValues(values=[str(batch_no)])})
                for i, v in zip(ids, vectors)
            ]
            stub.Upsert(pb.UpsertRequest(items=items), timeout=5)
            acked.update(zip(ids, vectors))
            if batch_no % 5 == 4:
                gone = [f"b{batch_no - 1}-0", f"b{batch_no - 1}-1"]
                maybe_deleted.update(gone)
                stub.Delete(pb.DeleteRequest(item_ids=gone), timeout=5)
                maybe_deleted.difference_update(gone)
                deleted.update(gone)
            batch_no += 1
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
    finally:
        killer.cancel()
        channel.close()
    assert process.wait(10) == -signal.SIGKILL
    assert batch_no > 30, "too few writes before the kill to cover snapshots and log replay"

    process, stub, channel = start(data_dir, port_file)
    try:
        stats = stub.GetStats(pb.GetStatsRequest())
        live = {i: v for i, v in acked.items() if i not in deleted}
        surely_live = {i: v for i, v in live.items() if i not in maybe_deleted}
        # The one unacknowledged upsert or delete in flight at the kill may or may not have landed.
        assert len(surely_live) <= stats.item_count <= len(live) + 8
        for item_id, vector in surely_live.items():
            reply = stub.Search(pb.SearchRequest(query_vector=vector.tolist(), k=1))
            assert reply.results[0].item_id == item_id
            assert reply.results[0].score == pytest.approx(1.0, abs=1e-3)
        # One delete is one log record: it landed whole or not at all.
        landed = [stub.Search(pb.SearchRequest(query_vector=acked[i].tolist(), k=1)).results[0].item_id != i
                  for i in maybe_deleted]
        assert len(set(landed)) <= 1, landed
        assert stats.item_count >= len(live) - (len(maybe_deleted) if any(landed) else 0)
        for item_id in deleted:
            reply = stub.Search(pb.SearchRequest(query_vector=acked[item_id].tolist(), k=1))
            assert reply.results[0].item_id != item_id
        reply = stub.Search(pb.SearchRequest(query_item_ids=["b3-5"], k=1, filters=[
            common_pb2.AttributeFilter(key="batch", values=["3"])]))
        assert reply.results[0].item_id == "b3-5"
    finally:
        channel.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


def test_concurrent_acknowledged_writes_survive_kill_9(tmp_path):
    """Writers racing each other share fsyncs (group commit); each one's acknowledged writes survive."""
    data_dir, port_file = tmp_path / "data", tmp_path / "port"
    process, stub, channel = start(data_dir, port_file)
    writers = 6
    acked: dict[str, np.ndarray] = {}
    lock = threading.Lock()

    def write(w: int) -> None:
        rng = np.random.default_rng(100 + w)
        batch_no = 0
        try:
            while True:
                ids = [f"w{w}-{batch_no}-{i}" for i in range(4)]
                vectors = rng.standard_normal((4, DIM)).astype(np.float32)
                items = [pb.IndexedItem(item_id=i, vector=v.tolist()) for i, v in zip(ids, vectors)]
                stub.Upsert(pb.UpsertRequest(items=items), timeout=5)
                with lock:
                    acked.update(zip(ids, vectors))
                batch_no += 1
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    os.kill(process.pid, signal.SIGKILL)
    for t in threads:
        t.join(10)
    channel.close()
    assert process.wait(10) == -signal.SIGKILL
    assert len(acked) > 4 * 30, "too few writes before the kill"

    process, stub, channel = start(data_dir, port_file)
    try:
        stats = stub.GetStats(pb.GetStatsRequest())
        # Each writer's one unacknowledged upsert in flight at the kill may or may not have landed.
        assert len(acked) <= stats.item_count <= len(acked) + 4 * writers
        for item_id, vector in acked.items():
            reply = stub.Search(pb.SearchRequest(query_vector=vector.tolist(), k=1))
            assert reply.results[0].item_id == item_id
    finally:
        channel.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
