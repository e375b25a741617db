"""Two ItemStores on one SQLite file (two Ray Serve replicas): the follower keeps each one's memory in
step with what the other writes."""

from __future__ import annotations

import numpy as np
import pytest

from ranking_service.item_store import ItemStore
from ranking_service.ray_serve.store_sync import ItemStoreFollower

VERSION = "v1"


def store_at(path) -> ItemStore:
    return ItemStore(path, 4, VERSION)


def put(store: ItemStore, ids: list[str], vectors: np.ndarray) -> None:
    store.put(ids, ids, vectors)


def no_encode(ids, texts):
    pytest.fail(f"replicas on one model version never re-encode: {ids}")


def known(store: ItemStore, ids: list[str]) -> list[bool]:
    return store.gather(ids)[1].tolist()


@pytest.fixture
def pair(tmp_path):
    path = tmp_path / "item_repr.sqlite"
    a, b = store_at(path), store_at(path)
    put(a, ["before"], np.ones((1, 4), dtype=np.float32))  # written before any follower existed
    followers = ItemStoreFollower(a, path, VERSION, no_encode), ItemStoreFollower(b, path, VERSION, no_encode)
    yield a, b, followers
    for f in followers:
        f.close()
    a.close()
    b.close()


def test_writes_deletes_and_updates_reach_the_other_replica(pair):
    a, b, (fa, fb) = pair
    assert known(b, ["before"]) == [True]  # the follower's first full read
    assert fb.catch_up() == 0  # nothing new: one PRAGMA, no reads

    put(a, ["x1", "x2"], np.eye(4, dtype=np.float32)[:2])
    assert known(b, ["x1", "x2"]) == [False, False]
    assert fb.catch_up() == 2
    assert known(b, ["x1", "x2"]) == [True, True]
    np.testing.assert_array_equal(b.gather(["x2"])[0], np.eye(4, dtype=np.float32)[1:2])

    put(b, ["x2"], np.full((1, 4), 7, dtype=np.float32))  # update on the other side
    fa.catch_up()
    np.testing.assert_array_equal(a.gather(["x2"])[0], np.full((1, 4), 7, dtype=np.float32))

    a.delete(["x1"])
    fb.catch_up()
    assert known(b, ["x1", "x2", "before"]) == [False, True, True]


def test_a_follower_behind_the_pruned_log_reads_everything(tmp_path):
    path = tmp_path / "item_repr.sqlite"
    a, b = store_at(path), store_at(path)
    ItemStoreFollower(a, path, VERSION, no_encode, log_keep=2).close()  # the triggers keep the last 2 changes
    fb = ItemStoreFollower(b, path, VERSION, no_encode)
    for n in range(5):  # more changes than the log keeps: b's next sequence number is gone
        put(a, [f"y{n}"], np.ones((1, 4), dtype=np.float32))
    a.delete(["y0"])
    reloads = fb.full_reloads
    fb.catch_up()
    assert fb.full_reloads == reloads + 1
    assert known(b, ["y0", "y1", "y4"]) == [False, True, True]
    assert fb._db.execute("SELECT count(*) FROM item_repr_log").fetchone()[0] <= 3
    fb.close()
    a.close()
    b.close()


def test_mid_swap_a_replica_encodes_what_a_replica_on_the_other_version_wrote(tmp_path):
    """During a hot swap one replica serves v2 while another still serves v1 on the same file."""
    path = tmp_path / "item_repr.sqlite"
    old, new = ItemStore(path, 4, "v1"), ItemStore(path, 4, "v2")
    encoded: list[str] = []

    def encode_v2(ids, texts):
        encoded.extend(texts)
        return np.full((len(ids), 4), 2.0, dtype=np.float32)

    old.put(["a"], ["text a"], np.ones((1, 4), dtype=np.float32))
    new.load(encode_v2)
    follower = ItemStoreFollower(new, path, "v2", encode_v2)
    old_follower = ItemStoreFollower(old, path, "v1", no_encode)  # the v1 replica keeps its own rows
    encoded.clear()

    old.put(["n"], ["text n"], np.ones((1, 4), dtype=np.float32))  # a new item through the old model
    old.put(["a"], ["text a, edited"], np.ones((1, 4), dtype=np.float32))  # and a new text for a known one
    follower.catch_up()
    assert sorted(encoded) == ["text a, edited", "text n"]  # encoded by v2 from the latest texts
    vectors, found = new.gather(["a", "n"])
    assert found.all() and (vectors == 2.0).all()
    assert follower.items_encoded == 2

    old_follower.catch_up()  # v2's re-encodes carry the same texts: the v1 rows stay, nothing bounces back
    assert old.gather(["a", "n"])[1].all()
    follower.catch_up()  # its own re-encodes come back through the log: read, not encoded again
    assert sorted(encoded) == ["text a, edited", "text n"]
    for f in (follower, old_follower):
        f.close()
    old.close()
    new.close()
