"""The gateway's re-indexing pass when the ranking tier answers from two model versions (Ray replicas
mid-swap): no pass records a version its vectors did not all come from.

The ranking tier here is a stand-in whose answering version the test flips between calls: the real
interleaving depends on Serve's routing and cannot be forced; the real swap runs in
tests/integration/test_ray_ranking.py.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from gateway.downstream import EncodedItems
from gateway.reindex import INDEX_VERSION_KEY, IndexReconciler, note_upsert_version
from gateway.store import GatewayStore
from lmrec.catalog import CatalogItem


class Ranking:
    def __init__(self, serving: str) -> None:
        self.serving = serving
        self.answers: list[str] = []  # versions the next encode calls answer from, then `serving`

    async def model_info(self, timeout: float):
        return SimpleNamespace(model_version=self.serving)

    async def encode_items(self, items, timeout: float) -> EncodedItems:
        version = self.answers.pop(0) if self.answers else self.serving
        return EncodedItems([[0.0, 1.0] for _ in items], version)


class Retrieval:
    def __init__(self) -> None:
        self.upserted: list[str] = []

    async def upsert(self, items, timeout: float) -> None:
        self.upserted.extend(i.item_id for i in items)


def store_with_items(tmp_path, n: int) -> GatewayStore:
    store = GatewayStore(tmp_path / "gateway.sqlite")
    store.upsert_items([CatalogItem(str(i), f"t{i}", f"text {i}") for i in range(n)])
    return store


def test_a_pass_that_meets_another_version_is_not_recorded(tmp_path):
    store = store_with_items(tmp_path, 300)  # three batches
    store.set_meta(INDEX_VERSION_KEY, "v1")
    ranking, retrieval = Ranking("v2"), Retrieval()
    ranking.answers = ["v2", "v1"]  # the second batch is answered by a replica still on v1
    reconciler = IndexReconciler(store, ranking, retrieval)
    assert not asyncio.run(reconciler.check_once())
    assert store.get_meta(INDEX_VERSION_KEY) == "v1"
    assert asyncio.run(reconciler.check_once())  # all replicas on v2 now
    assert store.get_meta(INDEX_VERSION_KEY) == "v2" and len(retrieval.upserted) == 128 + 300
    store.close()


def test_an_upsert_from_another_version_marks_the_index_stale(tmp_path):
    store = store_with_items(tmp_path, 10)
    note_upsert_version(store, "v1")  # nothing indexed yet: the first pass does everything anyway
    assert store.get_meta(INDEX_VERSION_KEY) is None
    store.set_meta(INDEX_VERSION_KEY, "v2")
    note_upsert_version(store, "v2")
    assert store.get_meta(INDEX_VERSION_KEY) == "v2"
    note_upsert_version(store, "v1")  # encoded by a replica not yet swapped
    reconciler = IndexReconciler(store, Ranking("v2"), Retrieval())
    assert asyncio.run(reconciler.check_once()) and store.get_meta(INDEX_VERSION_KEY) == "v2"
    store.close()
