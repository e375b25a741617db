"""Write-ahead log, snapshots and recovery of the retrieval index."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from retrieval_service.index import VectorIndex
from retrieval_service.store import IndexStore
from retrieval_service.wal import WriteAheadLog, delete_record, read_records, upsert_record

pytestmark = pytest.mark.timeout(60)
DIM = 8


def open_store(path, snapshot_every=1_000) -> IndexStore:
    return IndexStore(VectorIndex(DIM, initial_capacity=32, exact_scan_threshold=0), path, snapshot_every)


def vecs(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def test_wal_round_trip_and_torn_tail_is_cut(tmp_path):
    path = tmp_path / "wal.log"
    wal = WriteAheadLog(path, 0, 0)
    wal.append(upsert_record(["a", "b"], vecs(2), [{"g": ["x"]}, None]))
    wal.append(delete_record(["a"]))
    wal.append(upsert_record(["c"], vecs(1, 1), None))
    wal.close()
    whole = path.read_bytes()

    for cut in (1, 7, 20):  # inside the header, inside the payload
        path.write_bytes(whole[:-cut])
        records, valid = read_records(path, DIM)
        assert [r.op for r in records] == [b"U", b"D"]
        assert records[0].ids == ["a", "b"] and records[0].attributes == [{"g": ["x"]}, None]
        np.testing.assert_array_equal(records[0].vectors, vecs(2))
        WriteAheadLog(path, valid, len(records)).close()
        assert path.stat().st_size == valid

    corrupt = bytearray(whole)
    corrupt[-3] ^= 0xFF  # a flipped bit in the last record fails its checksum
    path.write_bytes(bytes(corrupt))
    assert len(read_records(path, DIM)[0]) == 2


def test_recovery_replays_the_log_over_the_snapshot(tmp_path):
    store = open_store(tmp_path)
    v = vecs(20)
    store.upsert([f"i{i}" for i in range(10)], v[:10], [{"g": ["a"]}] * 10)
    store.snapshot()
    store.upsert([f"i{i}" for i in range(10, 20)], v[10:], [{"g": ["b"]}] * 10)
    store.delete(["i0", "i15"])
    assert store.wal_records == 2
    # No close(): as if the process died here.

    recovered = open_store(tmp_path)
    assert len(recovered.index) == 18
    assert "i0" not in recovered.index and "i15" not in recovered.index
    assert recovered.search(v[12], 1).ids == ["i12"]
    assert len(recovered.search(v[0], 20, filters=[("g", ["b"])]).ids) == 9
    assert recovered.wal_records == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "snapshot-1", "wal-1.log"]


def test_snapshot_every_n_records_truncates_the_log(tmp_path):
    store = open_store(tmp_path, snapshot_every=3)
    v = vecs(10)
    for i in range(10):
        store.upsert([f"i{i}"], v[i : i + 1], None)
        store.wait_for_snapshot()
    assert store.wal_records < 3
    assert (tmp_path / "CURRENT").read_text().strip() == "3"
    recovered = open_store(tmp_path)
    assert len(recovered.index) == 10
    assert recovered.wal_records == store.wal_records


def test_leftovers_of_a_crashed_snapshot_are_ignored_and_removed(tmp_path):
    store = open_store(tmp_path)
    store.upsert(["a"], vecs(1), None)
    store.snapshot()
    store.upsert(["b"], vecs(1, 1), None)
    # A crash after the temporary snapshot was written but before CURRENT moved.
    (tmp_path / "snapshot-2.tmp").mkdir()
    (tmp_path / "snapshot-2.tmp" / "graph.hnsw").write_bytes(b"partial")
    (tmp_path / "wal-2.log").write_bytes(b"")
    recovered = open_store(tmp_path)
    assert sorted(recovered.search(vecs(1)[0], 5).ids) == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "snapshot-1", "wal-1.log"]


def test_in_memory_store_has_no_log():
    store = IndexStore(VectorIndex(DIM))
    store.upsert(["a"], vecs(1), None)
    assert store.wal_records == 0 and len(store.index) == 1


def test_no_write_is_acknowledged_before_the_fsync_that_covers_it(tmp_path, monkeypatch):
    store = open_store(tmp_path)
    release = threading.Event()
    real_fsync = os.fsync

    def held_fsync(fd):
        release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr("retrieval_service.wal.os.fsync", held_fsync)
    writer = threading.Thread(target=store.upsert, args=(["a"], vecs(1), None))
    writer.start()
    writer.join(0.3)
    assert writer.is_alive()  # written and applied, but not acknowledged: its fsync has not returned
    release.set()
    writer.join(10)
    assert not writer.is_alive()


def test_concurrent_writers_share_fsyncs_and_are_all_durable(tmp_path, monkeypatch):
    store = open_store(tmp_path, snapshot_every=10**6)
    real_fsync = os.fsync

    def slow_fsync(fd):
        time.sleep(0.02)  # a disk's flush: long enough that writers arriving meanwhile queue up
        real_fsync(fd)

    monkeypatch.setattr("retrieval_service.wal.os.fsync", slow_fsync)
    wal = store._wal
    writers, per_writer = 8, 10
    acknowledged: list[str] = []
    lock = threading.Lock()
    v = vecs(writers * per_writer)

    def write(w):
        for i in range(per_writer):
            item = w * per_writer + i
            store.upsert([f"i{item}"], v[item : item + 1], [{"w": [str(w)]}])
            with lock:
                acknowledged.append(f"i{item}")

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(acknowledged) == writers * per_writer
    assert wal.fsync_count < writers * per_writer / 2  # group commit: one fsync served several writes
    # No close(): as if the process died after the last acknowledgement.
    recovered = open_store(tmp_path)
    assert all(item in recovered.index for item in acknowledged)
    assert len(recovered.index.search(v[0], 100, filters=[("w", ["3"])]).ids) == per_writer
