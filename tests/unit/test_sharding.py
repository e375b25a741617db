"""Item placement: jump consistent hashing of a stable key, what a change of shard count moves, merging."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lmrec.sharding import JUMP, MODULO, Placement, ShardMap, jump_hash, merge_shard_results, moves, shard_for

IDS = [f"item-{i}" for i in range(20_000)]


def test_jump_hash_matches_the_reference_implementation():
    # Values of the paper's C++ code (as published by python-jump-consistent-hash's tests).
    assert [jump_hash(1, 1), jump_hash(42, 57), jump_hash(0xDEAD10CC, 1), jump_hash(0xDEAD10CC, 666),
            jump_hash(256, 1024)] == [0, 43, 0, 361, 520]
    with pytest.raises(ValueError):
        jump_hash(1, 0)


def test_placement_is_the_same_in_every_process():
    script = ("import json; from lmrec.sharding import shard_for; "
              "print(json.dumps([shard_for(f'item-{i}', 7) for i in range(200)]))")
    answers = []
    for seed in ("1", "2"):  # Python's own hash() differs between these two
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        answers.append(json.loads(out.stdout))
    assert answers[0] == answers[1] == [shard_for(f"item-{i}", 7) for i in range(200)]


@pytest.mark.parametrize("before, after", [(1, 2), (2, 3), (3, 4), (4, 8), (8, 5), (3, 2)])
def test_a_count_change_moves_only_what_it_must(before, after):
    moved = moves(IDS, Placement(before), Placement(after))
    expected = abs(after - before) / max(before, after)
    assert len(moved) / len(IDS) == pytest.approx(expected, abs=0.02)
    if after > before:  # growth: items only go to the new shards
        assert all(new >= before for _, new in moved.values())
    else:  # shrink: items only leave the removed shards
        assert all(old >= after for old, _ in moved.values())


def test_shards_are_balanced():
    counts = [0] * 5
    for item_id in IDS:
        counts[shard_for(item_id, 5)] += 1
    assert max(counts) / min(counts) < 1.06


def test_modulo_placement_is_kept_for_old_indexes_and_moves_almost_everything():
    legacy = Placement(2, MODULO)
    assert {legacy.owner(i) for i in IDS[:100]} == {0, 1}
    assert len(moves(IDS, Placement(2, MODULO), Placement(3, MODULO))) / len(IDS) == pytest.approx(2 / 3, abs=0.02)
    # Migrating an index in place (modulo -> jump at the same count) moves about half of it.
    assert len(moves(IDS, legacy, Placement(2, JUMP))) / len(IDS) == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="scheme"):
        Placement(2, "ring")


def test_merge_keeps_each_item_once_with_its_best_score():
    shard_a = [("x", 0.9), ("y", 0.5)]
    shard_b = [("x", 0.9), ("z", 0.7), ("w", 0.1)]  # x is mid-move: on both shards
    assert merge_shard_results([shard_a, shard_b], 3) == [("x", 0.9), ("z", 0.7), ("y", 0.5)]
    assert merge_shard_results([[("x", 0.2)], [("x", 0.4)]], 5) == [("x", 0.4)]


def test_shard_map_round_trip(tmp_path):
    path = tmp_path / "shards.json"
    ShardMap(("a:1", "b:2", "c:3"), epoch=4).save(path)
    loaded = ShardMap.load(path)
    assert loaded == ShardMap(("a:1", "b:2", "c:3"), JUMP, 4)
    assert loaded.placement == Placement(3)
    path.write_text("{}")
    with pytest.raises(ValueError, match="not a shard map"):
        ShardMap.load(path)
