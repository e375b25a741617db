"""Keeps the retrieval index in the vector space of the model the ranking tier serves.

Item vectors in the retrieval index come from one model version; when the ranking tier starts with, or
hot-swaps to, another bundle, every catalogue item must be re-encoded and re-upserted, or retrieval
would compare new context vectors with old item vectors. The gateway remembers which model version its
index holds (in its own durable store) and checks the ranking tier's version periodically; on a change
it re-indexes the catalogue in batches while serving continues (answers during that window are still
ranked by the new model, only candidate recall is briefly lower).

On Ray Serve, replicas swap a few seconds apart, so for a moment the ranking tier answers from two
versions. A pass only counts when every batch came back from the version it re-indexes for, and an item
upserted with another version's vector marks the index stale; either way the next pass redoes the work.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from gateway.downstream import RankingClient, ShardedRetrievalClient
from gateway.store import GatewayStore
from lmrec.catalog import attribute_values
from lmrec.v1 import retrieval_service_pb2 as rt

log = logging.getLogger(__name__)
INDEX_VERSION_KEY = "index_model_version"
STALE = ""  # never a model version: the next pass re-indexes
BATCH = 128
CALL_TIMEOUT_S = 60.0


def note_upsert_version(store: GatewayStore, model_version: str) -> None:
    """After an upsert: a vector from another model than the index holds makes the index stale."""
    indexed = store.get_meta(INDEX_VERSION_KEY)
    if indexed not in (None, model_version):
        log.info("an upsert was encoded by %s, the index holds %s vectors: re-indexing at the next pass",
                 model_version, indexed)
        store.set_meta(INDEX_VERSION_KEY, STALE)


class IndexReconciler:
    def __init__(self, store: GatewayStore, ranking: RankingClient, retrieval: ShardedRetrievalClient) -> None:
        self.store = store
        self.ranking = ranking
        self.retrieval = retrieval
        self.reindexed = 0

    async def index_version(self) -> str | None:
        return await asyncio.to_thread(self.store.get_meta, INDEX_VERSION_KEY)

    async def check_once(self) -> bool:
        """Re-indexes the catalogue if the ranking tier serves another model; returns whether it did."""
        version = (await self.ranking.model_info(timeout=10.0)).model_version
        before = await self.index_version()
        if version == before:
            return False
        items = list(self.store.catalog.values())
        if items:
            log.info("retrieval index holds %s vectors, ranking serves %s: re-indexing %d items",
                     before, version, len(items))
        for start in range(0, len(items), BATCH):
            batch = items[start:start + BATCH]
            encoded = await self.ranking.encode_items([(i.item_id, i.text) for i in batch], CALL_TIMEOUT_S)
            if encoded.model_version != version:
                log.info("re-indexing for %s met %s (replicas mid-swap); the next pass starts over",
                         version, encoded.model_version)
                return False
            await self.retrieval.upsert([
                rt.IndexedItem(item_id=i.item_id, vector=vec, attributes=attribute_values(i.attributes))
                for i, vec in zip(batch, encoded.vectors)], CALL_TIMEOUT_S)
        if await self.index_version() != before:  # an upsert meanwhile came from another model
            return False
        # Recorded only now: a crash midway leaves the old version, so the next pass redoes the work; a
        # model swapped again midway shows up as another mismatch at the next pass.
        await asyncio.to_thread(self.store.set_meta, INDEX_VERSION_KEY, version)
        self.reindexed += len(items)
        if items:
            log.info("re-indexed %d items with %s", len(items), version)
        return True

    async def run(self, interval_s: float) -> None:
        while True:
            try:
                await self.check_once()
            except grpc.aio.AioRpcError as exc:
                log.debug("index check postponed: %s", exc.details())
            except Exception:  # noqa: BLE001 - a failed pass is retried at the next interval
                log.exception("index check failed; retrying in %.0f s", interval_s)
            await asyncio.sleep(interval_s)
