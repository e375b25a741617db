"""A retrieval shard's placement: recorded in its data directory, checked at start, changed by a move."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec.sharding import JUMP, MODULO, Placement, shard_for
from retrieval_service.admin import ShardState
from retrieval_service.index import VectorIndex
from retrieval_service.placement import NotOwned, PlacementMismatch, ShardPlacement, resolve_at_start
from retrieval_service.reshard import ReshardError, check_start
from retrieval_service.store import IndexStore

pytestmark = pytest.mark.timeout(60)
DIM = 8
IDS = [f"item-{i}" for i in range(300)]


def vecs(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def open_store(path, index=0, count=1) -> IndexStore:
    return IndexStore(VectorIndex(DIM, initial_capacity=32), path, 1_000, ShardPlacement(index, Placement(count)))


def owned(index, count, scheme=JUMP):
    return [i for i in IDS if shard_for(i, count, scheme) == index]


def test_start_decisions():
    fresh = resolve_at_start(None, 1, 3, holds_items=False)
    assert fresh == ShardPlacement(1, Placement(3, JUMP))
    # An index written before placement was recorded was placed by modulo: kept, and recorded as such.
    assert resolve_at_start(None, 1, 3, holds_items=True) == ShardPlacement(1, Placement(3, MODULO))
    assert resolve_at_start(None, 0, 1, holds_items=True) == ShardPlacement(0, Placement(1, JUMP))
    with pytest.raises(PlacementMismatch, match="--shard-count 3"):
        resolve_at_start(fresh, 1, 2, holds_items=True)
    with pytest.raises(PlacementMismatch, match="not shard 2"):
        resolve_at_start(fresh, 2, 3, holds_items=True)
    # Mid-move a restart with either count is the same shard.
    moving = ShardPlacement(1, Placement(3), moving_from=Placement(2))
    assert resolve_at_start(moving, 1, 2, holds_items=True) == moving
    assert resolve_at_start(moving, 1, 3, holds_items=True) == moving
    # An empty shard takes whatever it is started as.
    assert resolve_at_start(fresh, 0, 2, holds_items=False) == ShardPlacement(0, Placement(2))


def test_placement_is_recorded_and_a_contradicting_start_is_refused(tmp_path):
    store = open_store(tmp_path, 1, 2)
    mine = owned(1, 2)
    store.upsert(mine, vecs(len(mine)), None)
    with pytest.raises(NotOwned, match="not owned by shard 1 of 2"):
        store.upsert(owned(0, 2)[:1], vecs(1), None)
    assert store.wal_records == 1  # the refused write was never logged
    store.close()
    with pytest.raises(PlacementMismatch, match="start it with --shard-count 2"):
        open_store(tmp_path, 1, 3)
    again = open_store(tmp_path, 1, 2)
    assert len(again.index) == len(mine)


def test_a_legacy_modulo_index_is_kept_and_refuses_jump_writes(tmp_path):
    legacy = IndexStore(VectorIndex(DIM, initial_capacity=32), tmp_path)  # no placement: as before
    mine = owned(0, 2, MODULO)
    legacy.upsert(mine, vecs(len(mine)), None)
    legacy.close()
    store = open_store(tmp_path, 0, 2)
    assert store.placement == ShardPlacement(0, Placement(2, MODULO))
    jump_only = next(i for i in owned(0, 2) if i not in mine)
    with pytest.raises(NotOwned, match=r"modulo hashing .* `lmrec reshard --from 2 --to 2`"):
        store.upsert([jump_only], vecs(1), None)
    store.upsert(mine[:1], vecs(1), None)  # its own items stay writable


def test_a_move_fences_leaving_items_and_drops_them_at_the_end(tmp_path):
    store = open_store(tmp_path, 0, 2)
    mine = owned(0, 2)
    attrs = [{"parity": [str(n % 2)]} for n in range(len(mine))]
    store.upsert(mine, vecs(len(mine)), attrs)
    leaving = sorted(i for i in mine if shard_for(i, 3) != 0)
    staying = [i for i in mine if shard_for(i, 3) == 0]
    assert 0.2 < len(leaving) / len(mine) < 0.45

    store.set_placement(Placement(3))
    assert store.set_placement(Placement(3)).moving_from == Placement(2)  # idempotent
    assert store.misplaced_ids() == leaving
    with pytest.raises(NotOwned, match="resharding is in progress"):
        store.upsert(leaving[:1], vecs(1), None)
    with pytest.raises(NotOwned, match="being moved"):
        store.delete(leaving[:1])
    store.upsert(staying[:1], vecs(1, 5), None)
    store.delete(staying[1:2])
    # A different move cannot start before this one ends.
    with pytest.raises(NotOwned, match="must finish"):
        store.set_placement(Placement(4))

    ids, vectors, attributes = store.export(leaving[:3])
    assert ids == leaving[:3] and vectors.shape == (3, DIM)
    assert attributes == [attrs[mine.index(i)] for i in leaving[:3]]
    # Leaving items are still searched until the drop.
    assert store.search(vectors[0], 1).ids == [leaving[0]]

    # A crash mid-move keeps the fence.
    store.close()
    store = open_store(tmp_path, 0, 2)
    assert store.placement.moving_from == Placement(2) and store.misplaced_ids() == leaving

    assert store.drop_misplaced() == len(leaving)
    assert store.placement == ShardPlacement(0, Placement(3))
    assert len(store.index) == len(staying) - 1
    assert store.drop_misplaced() == 0
    store.close()
    assert open_store(tmp_path, 0, 3).placement == ShardPlacement(0, Placement(3))


def state(index, count, items=10, moving=None, dim=8, scheme=JUMP):
    return ShardState(index, Placement(count, scheme), moving, items, dim, None)


def test_reshard_checks_the_shards_before_moving_anything():
    assert check_start([state(0, 2), state(1, 2), state(2, 3)], 2, 3) == Placement(2)
    # Resuming after a fence.
    assert check_start([state(0, 3, moving=Placement(2)), state(1, 2), state(2, 3)], 2, 3) == Placement(2)
    assert check_start([state(0, 2, scheme=MODULO), state(1, 2, scheme=MODULO)], 2, 2) == Placement(2, MODULO)
    with pytest.raises(ReshardError, match="--shard-index 2 --shard-count 3"):
        check_start([state(0, 2), state(1, 2), state(2, 2)], 2, 3)
    with pytest.raises(ReshardError, match="shard order"):
        check_start([state(1, 2), state(0, 2), state(2, 3)], 2, 3)
    with pytest.raises(ReshardError, match="addresses of shards 0..2"):
        check_start([state(0, 2), state(1, 2)], 2, 3)
    with pytest.raises(ReshardError, match="16-d"):
        check_start([state(0, 2), state(1, 2), state(2, 3, dim=16)], 2, 3)
    with pytest.raises(ReshardError, match="mix placement schemes"):
        check_start([state(0, 2, scheme=MODULO), state(1, 2), state(2, 3)], 2, 3)
    with pytest.raises(ReshardError, match="finish that move first"):
        check_start([state(0, 4, moving=Placement(2)), state(1, 2), state(2, 3)], 2, 3)
