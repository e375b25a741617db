"""Write-ahead log, snapshots and recovery of the retrieval index."""

from __future__ import annotations

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
