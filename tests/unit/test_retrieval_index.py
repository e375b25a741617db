"""VectorIndex: recall against exact search, planned filtering, live writes, rebuilds, persistence."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from retrieval_service.index import SnapshotMismatch, VectorIndex, normalize

pytestmark = pytest.mark.timeout(60)


def clustered(n: int, dim: int, clusters: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    return (centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim))).astype(np.float32)


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[int]:
    scores = normalize(vectors) @ normalize(query)[0]
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    return np.argsort(-scores)[:k].tolist()


@pytest.fixture(scope="module")
def big():
    n, dim = 20_000, 48
    vectors = clustered(n, dim)
    ids = [f"i{i}" for i in range(n)]
    # colour: 10 values (10% each); rare: 7 items; tag: multi-valued
    attrs = [
        {"colour": [f"c{i % 10}"], "tag": ["even" if i % 2 == 0 else "odd", f"t{i % 3}"], **({"rare": ["y"]} if i % 3000 == 0 else {})}
        for i in range(n)
    ]
    # walk_cost_per_ef=0: plans by the threshold alone, so these tests choose the path they exercise.
    index = VectorIndex(dim, initial_capacity=1024, exact_scan_threshold=300, walk_cost_per_ef=0, auto_rebuild=False)
    index.upsert(ids, vectors, attrs)
    rng = np.random.default_rng(1)
    # Queries from the same distribution as the items: near an item, not one of them.
    queries = vectors[rng.integers(0, n, 200)] + 0.3 * rng.standard_normal((200, dim)).astype(np.float32)
    return index, vectors, ids, queries


def test_recall_at_10_against_exact_numpy(big):
    index, vectors, ids, queries = big
    hits = 0
    for q in queries:
        result = index.search(q, 10)
        assert result.plan == "hnsw"
        hits += len(set(result.ids) & {ids[i] for i in exact_top(vectors, q, 10)})
    assert hits / (10 * len(queries)) >= 0.95


def test_scores_are_cosine_similarities_best_first(big):
    index, vectors, ids, queries = big
    result = index.search(vectors[42] * 3.0, 5)
    assert result.ids[0] == "i42"
    assert result.scores[0] == pytest.approx(1.0, abs=1e-5)
    assert result.scores == sorted(result.scores, reverse=True)
    expected = normalize(vectors[[int(i[1:]) for i in result.ids]]) @ normalize(vectors[42])[0]
    np.testing.assert_allclose(result.scores, expected, atol=1e-5)


def test_filtered_search_recall_and_membership(big):
    index, vectors, ids, queries = big
    colours = np.array([i % 10 for i in range(len(ids))])
    hits = 0
    for q in queries[:50]:
        result = index.search(q, 10, filters=[("colour", ["c3", "c4"])])
        assert result.plan == "hnsw_filtered"
        assert len(result.ids) == 10
        assert all(int(i[1:]) % 10 in (3, 4) for i in result.ids)
        hits += len(set(result.ids) & {ids[i] for i in exact_top(vectors, q, 10, np.isin(colours, [3, 4]))})
    assert hits / 500 >= 0.95


@pytest.mark.parametrize("threshold", [0, 300, 50_000])
def test_exactly_k_whenever_k_eligible_items_exist(big, threshold):
    index, vectors, ids, queries = big
    index.exact_scan_threshold = threshold
    try:
        q = queries[0]
        # Tiny allowed set: every eligible item comes back, however small.
        result = index.search(q, 10, filters=[("rare", ["y"])])
        assert sorted(result.ids) == sorted(ids[i] for i in range(0, 20_000, 3000))
        # AND of filters; multi-valued attribute.
        result = index.search(q, 25, filters=[("colour", ["c0"]), ("tag", ["t1"])])
        assert len(result.ids) == 25
        assert all(int(i[1:]) % 10 == 0 and int(i[1:]) % 3 == 1 for i in result.ids)
        # Excluding nearly everything: k=20 asked, 15 left, 15 returned; then exactly k from a larger remainder.
        keep = {f"i{i}" for i in range(0, 20_000, 1333)}
        excluded = [i for i in ids if i not in keep]
        result = index.search(q, 20, exclude=excluded)
        assert sorted(result.ids) == sorted(keep)
        result = index.search(q, 100, exclude=ids[:19_000])
        assert len(result.ids) == 100 and all(int(i[1:]) >= 19_000 for i in result.ids)
        # Exclusion combined with a filter leaves one item.
        result = index.search(q, 5, exclude=["i0", "i3000", "i6000", "i9000", "i12000", "i15000"], filters=[("rare", ["y"])])
        assert result.ids == ["i18000"]
        # Nothing eligible.
        assert index.search(q, 5, filters=[("colour", ["nope"])]).ids == []
        assert index.search(q, 5, exclude=ids).ids == []
    finally:
        index.exact_scan_threshold = 300


def test_plan_follows_the_eligible_set_size(big):
    index, vectors, ids, queries = big
    assert index.search(queries[0], 10, filters=[("rare", ["y"])]).plan == "exact"
    assert index.search(queries[0], 10, filters=[("colour", ["c1"])]).plan == "hnsw_filtered"
    assert index.search(queries[0], 10, exclude=ids[:10]).plan == "hnsw_post_filter"
    assert index.search(queries[0], 10, exclude=ids[:19_900]).plan == "exact"


def test_selective_filters_scan_exactly_when_a_filtered_walk_would_cost_more(big):
    index, vectors, ids, queries = big
    index.walk_cost_per_ef = 24.0
    c1_t0 = [("colour", ["c1"]), ("tag", ["t0"])]  # ~667 items
    try:
        # 20k items, ef 128, rows fetched from hnswlib (100 copy rows each): a scan wins below
        # sqrt(24 * 128 * 20000 / 100) ~ 780 eligible items.
        assert index.search(queries[0], 10, filters=c1_t0).plan == "exact"
        assert index.search(queries[0], 10, filters=[("colour", ["c1"])]).plan == "hnsw_filtered"  # 2k
        assert index.search(queries[0], 10, filters=c1_t0, ef=16).plan == "hnsw_filtered"  # a cheaper walk
        assert index.search(queries[0], 10).plan == "hnsw"  # unrestricted searches always walk
    finally:
        index.walk_cost_per_ef = 0


def test_a_walk_that_comes_up_short_widens_then_scans_exactly(big, monkeypatch):
    index, vectors, ids, queries = big
    graph = index._graph
    real = graph.hnsw
    efs = []

    class ShortWalk:
        """Stands in for hnswlib when the graph walk cannot reach k eligible items."""

        def __getattr__(self, name):
            return getattr(real, name)

        def set_ef(self, ef):
            efs.append(ef)
            real.set_ef(ef)

        def knn_query(self, *args, **kwargs):
            raise RuntimeError("Cannot return the results in a contiguous 2D array. Probably ef or M is too small")

    monkeypatch.setattr(graph, "hnsw", ShortWalk())
    try:
        result = index.search(queries[0], 10, filters=[("colour", ["c5"])], ef=100)
    finally:
        graph.hnsw = real
    assert result.plan == "exact" and len(result.ids) == 10
    assert efs == [100, 400, 1600, 2048]
    colours = np.array([i % 10 for i in range(len(ids))])
    assert result.ids == [ids[i] for i in exact_top(vectors, queries[0], 10, colours == 5)]


def test_ef_is_clamped_to_bounds():
    index = VectorIndex(4, ef_default=50, ef_min=16, ef_max=300)
    assert [index.clamp_ef(e) for e in (None, 0, 1, 100, 10**6)] == [50, 50, 16, 100, 300]


def test_upsert_replaces_vector_and_attributes_and_delete_frees_slots():
    dim = 16
    index = VectorIndex(dim, initial_capacity=16, exact_scan_threshold=0, auto_rebuild=False)
    vectors = clustered(100, dim, seed=3)
    ids = [f"i{i}" for i in range(100)]
    index.upsert(ids, vectors, [{"g": ["a"]}] * 100)
    assert index.stats().capacity >= 100  # grew from 16

    index.upsert(["i5"], -vectors[7:8], [{"g": ["b"]}])
    assert index.search(-vectors[7], 1).ids == ["i5"]
    assert index.search(vectors[0], 10, filters=[("g", ["b"])]).ids == ["i5"]
    assert "i5" not in index.search(vectors[0], 100, filters=[("g", ["a"])]).ids

    assert index.delete(["i1", "i2", "i2", "ghost"]) == 2
    assert len(index) == 98 and "i1" not in index
    assert index.stats().tombstone_count == 2
    assert "i1" not in index.search(vectors[1], 98).ids
    # New items revive the freed slots before taking fresh ones.
    capacity = index.stats().capacity
    index.upsert(["new1", "new2"], vectors[1:3], None)
    assert index.stats().tombstone_count == 0 and index.stats().capacity == capacity
    assert index.search(vectors[1], 1).ids == ["new1"]
    assert len(index.search(vectors[1], 1000).ids) == 100

    found, rows = index.vectors_of(["i3", "ghost", "i4"])
    assert found == ["i3", "i4"]
    np.testing.assert_allclose(rows, normalize(vectors[3:5]), atol=1e-3)


def test_float32_copy_gives_exact_scores_on_the_exact_plan():
    vectors = clustered(50, 16, seed=9)
    index = VectorIndex(16, exact_scan_threshold=1_000, exact_scan_dtype="float32")
    index.upsert([f"i{i}" for i in range(50)], vectors)
    result = index.search(vectors[3], 50)
    assert result.plan == "exact"
    expected = np.sort(normalize(vectors) @ normalize(vectors[3])[0])[::-1]
    np.testing.assert_allclose(result.scores, expected, atol=1e-6)


def test_repeated_id_in_one_batch_keeps_the_last():
    index = VectorIndex(4, auto_rebuild=False)
    index.upsert(["a", "a"], np.array([[1, 0, 0, 0], [0, 1, 0, 0]], np.float32), [{"x": ["1"]}, {"x": ["2"]}])
    assert len(index) == 1
    assert index.search(np.array([0, 1, 0, 0], np.float32), 1).scores[0] == pytest.approx(1.0)
    assert index.search(np.array([0, 1, 0, 0], np.float32), 1, filters=[("x", ["1"])]).ids == []


def test_invalid_input_raises_value_error():
    index = VectorIndex(4)
    with pytest.raises(ValueError):
        index.upsert(["a"], np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError):
        index.upsert(["a"], np.ones((1, 3), np.float32))
    with pytest.raises(ValueError):
        index.search(np.array([np.nan, 1, 1, 1], np.float32), 1)
    with pytest.raises(ValueError):
        index.search(np.ones(4, np.float32), 0)


def test_tombstones_past_the_ratio_trigger_a_rebuild_that_keeps_concurrent_writes():
    dim = 16
    vectors = clustered(3000, dim, seed=5)
    ids = [f"i{i}" for i in range(3000)]
    index = VectorIndex(dim, initial_capacity=512, exact_scan_threshold=0, tombstone_rebuild_ratio=0.2)
    index.upsert(ids, vectors, [{"half": [str(i % 2)]} for i in range(3000)])
    stop = threading.Event()
    failures = []

    def searcher():
        while not stop.is_set():
            result = index.search(vectors[2999], 10)
            if len(result.ids) != 10 or result.ids[0] != "i2999":
                failures.append(result)

    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        assert index.delete(ids[:1000]) == 1000  # 1/3 tombstones: starts a background rebuild
        # Writes racing the rebuild are replayed onto the new graph.
        index.upsert(["late"], vectors[:1], [{"half": ["late"]}])
        index.delete(["i1500"])
        index.wait_for_rebuild(30)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures
    stats = index.stats()
    # The racing delete may have been replayed onto the new graph, leaving its one tombstone.
    assert stats.tombstone_count <= 1 and not stats.rebuilding
    assert len(index) == 2000
    assert index.search(vectors[0], 1).ids == ["late"]
    assert "i1500" not in index and "i10" not in index
    assert index.search(vectors[0], 1, filters=[("half", ["late"])]).ids == ["late"]
    assert len(index.search(vectors[0], 3000, filters=[("half", ["0"])]).ids) == 999  # i1500 was even


def test_save_and_load_round_trip(tmp_path):
    dim = 16
    index, vectors, ids = grouped_index(500, dim, 6, 5)
    index.delete(ids[:10])
    index.save(tmp_path)

    loaded = VectorIndex(dim, exact_scan_threshold=0, auto_rebuild=False)
    loaded.load(tmp_path)
    assert loaded.stats() == index.stats()
    for q in vectors[100:110]:
        assert loaded.search(q, 10, filters=[("g", ["1"])]) == index.search(q, 10, filters=[("g", ["1"])])
    loaded.upsert(["new"], vectors[:1], None)  # revives a saved tombstone
    assert loaded.search(vectors[0], 1).ids == ["new"]

    with pytest.raises(SnapshotMismatch, match="dimension"):
        VectorIndex(8).load(tmp_path)


def grouped_index(n: int, dim: int, seed: int, groups: int, key: str = "g", prefix: str = "", **settings):
    """An index of n clustered vectors "i0".."i{n-1}", item i tagged key=prefix + str(i % groups)."""
    vectors = clustered(n, dim, seed=seed)
    ids = [f"i{i}" for i in range(n)]
    index = VectorIndex(dim, **{"exact_scan_threshold": 0, "auto_rebuild": False, **settings})
    index.upsert(ids, vectors, [{key: [f"{prefix}{i % groups}"]} for i in range(n)])
    return index, vectors, ids


def value_graph_index(n: int = 4000, dim: int = 16):
    return grouped_index(n, dim, 11, 10, key="colour", prefix="c", initial_capacity=256, exact_scan_threshold=100,
                         walk_cost_per_ef=0, filter_graph_share=0.5)


def test_a_filtered_value_gets_its_own_graph_which_follows_writes():
    index, vectors, ids = value_graph_index()
    c1 = [("colour", ["c1"])]
    assert index.search(vectors[0], 10, filters=c1).plan == "hnsw_filtered"  # and asks for c1's graph
    index.wait_for_filter_graphs(30)
    colours = np.array([i % 10 for i in range(len(ids))])
    hits = 0
    for q in vectors[:50]:
        result = index.search(q, 10, filters=c1)
        assert result.plan == "hnsw_value_graph" and all(int(i[1:]) % 10 == 1 for i in result.ids)
        hits += len(set(result.ids) & {ids[i] for i in exact_top(vectors, q, 10, colours == 1)})
    assert hits / 500 >= 0.95

    index.upsert(["new"], vectors[2:3], [{"colour": ["c1"]}])  # joins c1
    index.upsert(["i11"], vectors[11:12], [{"colour": ["c2"]}])  # leaves c1
    index.upsert(["i21"], vectors[5:6], [{"colour": ["c1"]}])  # stays, moves
    index.delete(["i31"])
    assert index.search(vectors[2], 1, filters=c1).ids == ["new"]
    assert index.search(vectors[5], 1, filters=c1).ids == ["i21"]
    for gone in (11, 31):
        assert f"i{gone}" not in index.search(vectors[gone], 10, filters=c1).ids
    # Anything besides the value itself is applied as a label filter on its graph.
    result = index.search(vectors[2], 10, filters=c1, exclude=["new"])
    assert result.plan == "hnsw_value_graph" and "new" not in result.ids and len(result.ids) == 10
    # Two values, one of them without a graph yet: the plain filtered walk answers.
    assert index.search(vectors[2], 10, filters=[("colour", ["c1", "c2"])]).plan == "hnsw_filtered"


def test_a_value_graph_walk_drops_excluded_ids_and_falls_back_when_they_crowd_it():
    index, vectors, ids = value_graph_index()
    c1 = [("colour", ["c1"])]
    index.search(vectors[0], 10, filters=c1)
    index.wait_for_filter_graphs(30)
    colours = np.array([i % 10 for i in range(len(ids))])
    rng = np.random.default_rng(5)
    hits = crowded_hits = 0
    for q in vectors[1:401:10]:
        # A scattered history (the plan without a label mask) and one that crowds the query's neighbourhood.
        scattered = rng.choice(np.flatnonzero(colours == 1), 30, replace=False)
        crowd = np.array(exact_top(vectors, q, 150, colours == 1))
        for history, counter in ((scattered, "hits"), (crowd, "crowded")):
            allowed = (colours == 1) & ~np.isin(np.arange(len(ids)), history)
            result = index.search(q, 10, filters=c1, exclude=[ids[i] for i in history])
            assert result.plan == "hnsw_value_graph" and len(result.ids) == 10
            assert not set(result.ids) & {ids[i] for i in history}
            assert all(int(i[1:]) % 10 == 1 for i in result.ids)
            found = len(set(result.ids) & {ids[i] for i in exact_top(vectors, q, 10, allowed)})
            if counter == "hits":
                hits += found
            else:
                crowded_hits += found
    assert hits / 400 >= 0.95 and crowded_hits / 400 >= 0.9


def test_writes_during_a_value_graph_build_are_caught_up():
    index, vectors, ids = value_graph_index()
    c1 = [("colour", ["c1"])]
    stop = threading.Event()
    moved_in, moved_out = [], []

    def writer():
        # Moves c2 items into c1 (with a new vector) and c1 items out, while the graph is built.
        for j in range(200):
            if stop.is_set():
                break
            index.upsert([f"i{10 * j + 2}"], vectors[10 * j + 3 : 10 * j + 4], [{"colour": ["c1"]}])
            index.upsert([f"i{10 * j + 1}"], vectors[10 * j + 1 : 10 * j + 2], [{"colour": ["c2"]}])
            moved_in.append(j)
            moved_out.append(j)

    index.search(vectors[0], 10, filters=c1)
    thread = threading.Thread(target=writer)
    thread.start()
    index.wait_for_filter_graphs(60)
    stop.set()
    thread.join(60)
    assert index.search(vectors[0], 10, filters=c1).plan == "hnsw_value_graph"
    for j in moved_in[::7]:
        assert index.search(vectors[10 * j + 3], 1, filters=c1).ids == [f"i{10 * j + 2}"]
    for j in moved_out[::7]:
        assert f"i{10 * j + 1}" not in index.search(vectors[10 * j + 1], 10, filters=c1).ids


def test_value_graphs_stay_within_their_budget():
    index, vectors, ids = value_graph_index()
    index.filter_graph_share = 0.15  # room for one 10% value
    for value in ("c1", "c2"):
        index.search(vectors[0], 10, filters=[("colour", [value])])
        index.wait_for_filter_graphs(30)
    assert index.search(vectors[0], 10, filters=[("colour", ["c1"])]).plan == "hnsw_value_graph"
    assert index.search(vectors[0], 10, filters=[("colour", ["c2"])]).plan == "hnsw_filtered"


def test_exact_scans_read_hnswlib_rows_without_a_copy():
    vectors = clustered(300, 16, seed=12)
    plain = VectorIndex(16, exact_scan_threshold=1_000)
    plain.upsert([f"i{i}" for i in range(300)], vectors)
    result = plain.search(vectors[3], 20)
    assert result.plan == "exact"
    expected = np.sort(normalize(vectors) @ normalize(vectors[3])[0])[::-1][:20]
    np.testing.assert_allclose(result.scores, expected, atol=1e-5)


def test_loads_a_format_1_snapshot(tmp_path):
    """Snapshots written before the numpy tables (one JSON entry per item) still load."""
    import json

    dim = 16
    index, vectors, ids = grouped_index(200, dim, 13, 4)
    index.delete(ids[:5])
    index.save(tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    old = {
        "format": 1, "metric": meta["metric"], "dimension": dim, "m": meta["m"], "capacity": meta["capacity"],
        "next_label": meta["next_label"], "free": index._graph.free,
        "items": [[index._graph.ids.get(i), i, {"g": [str(n % 4)]}] for n, i in enumerate(ids) if n >= 5],
    }
    (tmp_path / "meta.json").write_text(json.dumps(old))
    (tmp_path / "slots.npz").unlink()
    loaded = VectorIndex(dim, exact_scan_threshold=0, auto_rebuild=False)
    loaded.load(tmp_path)
    assert loaded.stats() == index.stats()
    for q in vectors[50:55]:
        assert loaded.search(q, 10, filters=[("g", ["2"])]) == index.search(q, 10, filters=[("g", ["2"])])
    loaded.upsert(["new"], vectors[:1], None)  # revives a saved tombstone
    assert loaded.stats().tombstone_count == 4 and loaded.search(vectors[0], 1).ids == ["new"]


def test_filter_graphs_take_their_own_m():
    index, vectors, _ = grouped_index(1000, 16, 5, 4, key="colour", prefix="c", m=8, filter_graph_m=24,
                                      initial_capacity=256, exact_scan_threshold=10, walk_cost_per_ef=0,
                                      filter_graph_share=0.5)
    index.search(vectors[0], 5, filters=[("colour", ["c1"])])
    index.wait_for_filter_graphs(30)
    graph = index._graph.filter_graphs[("colour", "c1")]
    assert graph.hnsw.M == 24 and index._graph.hnsw.M == 8


def test_filter_graphs_come_back_with_the_snapshot(tmp_path):
    index, vectors, ids = value_graph_index()
    c1 = [("colour", ["c1"])]
    index.search(vectors[0], 10, filters=c1)
    index.wait_for_filter_graphs(30)
    index.save(tmp_path)
    assert (tmp_path / "filter-0.hnsw").is_file()

    restored = VectorIndex(16, initial_capacity=256, exact_scan_threshold=100, walk_cost_per_ef=0,
                           filter_graph_share=0.5, auto_rebuild=False)
    restored.load(tmp_path)
    # Served from the value graph at once, no rebuild queued; and it follows writes made after the load.
    assert restored.search(vectors[0], 10, filters=c1).plan == "hnsw_value_graph"
    assert restored._filter_thread is None
    restored.upsert(["fresh"], vectors[:1] * 1.001, [{"colour": ["c1"]}])
    result = restored.search(vectors[0], 10, filters=c1)
    assert result.plan == "hnsw_value_graph" and "fresh" in result.ids
    restored.delete(["fresh"])
    assert "fresh" not in restored.search(vectors[0], 10, filters=c1).ids

    # A configuration that would build them otherwise (another M) rebuilds instead of reusing them.
    other = VectorIndex(16, initial_capacity=256, exact_scan_threshold=100, walk_cost_per_ef=0,
                        filter_graph_share=0.5, filter_graph_m=32, auto_rebuild=False)
    other.load(tmp_path)
    assert other.search(vectors[0], 10, filters=c1).plan == "hnsw_filtered"


def test_exclusions_drop_from_an_unfiltered_walk_unless_they_crowd_it(big):
    """Few exclusions: the walk's own candidates minus the excluded. Exclusions around the query (a user's
    history near their context): too few survive, and the label-filtered walk answers instead."""
    index, vectors, ids, queries = big
    rng = np.random.default_rng(7)
    hits = 0
    for q in queries[:50]:
        excluded = [ids[i] for i in rng.choice(len(ids), 500, replace=False)]
        allowed = ~np.isin(np.arange(len(ids)), [int(i[1:]) for i in excluded])
        result = index.search(q, 10, exclude=excluded)
        assert result.plan == "hnsw_post_filter" and len(result.ids) == 10
        assert not set(result.ids) & set(excluded)
        hits += len(set(result.ids) & {ids[i] for i in exact_top(vectors, q, 10, allowed)})
    assert hits / 500 >= 0.95

    hits = 0
    for q in queries[:20]:
        crowd = exact_top(vectors, q, 400)  # every candidate a walk at the default ef would find
        allowed = ~np.isin(np.arange(len(ids)), crowd)
        result = index.search(q, 10, exclude=[ids[i] for i in crowd])
        assert result.plan == "hnsw_filtered" and len(result.ids) == 10
        assert not set(result.ids) & {ids[i] for i in crowd}
        hits += len(set(result.ids) & {ids[i] for i in exact_top(vectors, q, 10, allowed)})
    assert hits / 200 >= 0.9


def test_a_rebuild_rebuilds_the_filter_graphs_it_had_without_waiting_for_a_query():
    index, vectors, ids = value_graph_index()
    c1 = [("colour", ["c1"])]
    index.search(vectors[0], 10, filters=c1)
    index.wait_for_filter_graphs(30)
    index.delete(ids[::3])
    assert index.rebuild()
    index.wait_for_filter_graphs(30)  # queued by the rebuild itself, not by a query
    assert ("colour", "c1") in index._graph.filter_graphs
    result = index.search(vectors[1], 10, filters=c1)
    assert result.plan == "hnsw_value_graph" and all(int(i[1:]) % 10 == 1 and int(i[1:]) % 3 for i in result.ids)
