"""gRPC face of the index: validates requests, runs index work off the event loop (the store checks shard ownership)."""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from lmrec import tracing
from lmrec.errors import InvalidArgument
from lmrec.filters import parse_filters
from lmrec.v1 import common_pb2, retrieval_service_pb2, retrieval_service_pb2_grpc
from lmrec.validation import (MAX_BATCH, MAX_ID_LIST, MAX_SEARCH_FILTERS, check_batch, check_ids, check_range,
                              require_id)
from retrieval_service.store import IndexStore

if TYPE_CHECKING:
    from retrieval_service.metrics import RetrievalMetrics

MAX_K = 10_000
MAX_ATTRIBUTE_KEYS = 64
MAX_ATTRIBUTE_VALUES = 256
MAX_QUERY_ITEMS = 1_000
# Concurrent writes that can share one fsync.
WRITE_THREADS = 8


class RetrievalServicer(retrieval_service_pb2_grpc.RetrievalServiceServicer):
    """Args:
    store: the index, its durability and its shard placement (which items this server owns: it refuses
        writes of other shards' items, FAILED_PRECONDITION naming them).
    search_threads: threads running searches. Writes run on `WRITE_THREADS` threads of their own: the
        store applies them one at a time, and writers waiting for their fsync share one (group commit).
    metrics: Prometheus metrics of searches and writes (None: none kept).
    """

    def __init__(self, store: IndexStore, search_threads: int = 4, metrics: RetrievalMetrics | None = None) -> None:
        self._store = store
        self._metrics = metrics
        self._dimension = store.index.dimension
        self._readers = ThreadPoolExecutor(search_threads, thread_name_prefix="retrieval-search")
        self._writer = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="retrieval-write")

    def close(self) -> None:
        self._readers.shutdown(wait=True)
        self._writer.shutdown(wait=True)

    async def _read(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    async def _write(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    async def Search(self, request, context):
        check_range(request.k, "k", 1, MAX_K)
        if request.ef < 0:
            raise InvalidArgument("ef", f"must be 0 (server default) or positive, got {request.ef}")
        exclude = check_ids(request.exclude_item_ids, "exclude_item_ids")
        filters = parse_filters(request.filters, "filters", MAX_SEARCH_FILTERS)
        if request.query_vector:
            query = _vector(request.query_vector, "query_vector", self._dimension)
        else:
            if not request.query_item_ids:
                raise InvalidArgument("query_vector", "empty, and no query_item_ids to average instead")
            query_ids = check_ids(request.query_item_ids, "query_item_ids", MAX_QUERY_ITEMS)
            _, vectors = await self._read(self._store.vectors_of, query_ids)
            query = vectors.mean(axis=0) if len(vectors) else None
            if query is None or not np.linalg.norm(query) > 1e-6:
                # No known item (or items that cancel out): nothing to be similar to.
                return retrieval_service_pb2.SearchResponse(plan="none")
        started = time.perf_counter()
        result = await self._read(self._store.search, query, request.k, exclude, filters, request.ef)
        if self._metrics is not None:
            self._metrics.observe_search(result.plan, time.perf_counter() - started, len(result.ids))
        tracing.annotate({"lmrec.k": request.k, "lmrec.filters": len(filters), "lmrec.plan": result.plan,
                          "lmrec.results": len(result.ids)})
        return retrieval_service_pb2.SearchResponse(
            results=[common_pb2.ScoredItem(item_id=i, score=s) for i, s in zip(result.ids, result.scores)],
            plan=result.plan,
        )

    async def Upsert(self, request, context):
        check_batch(len(request.items), "items", MAX_BATCH)
        ids: list[str] = []
        vectors = np.empty((len(request.items), self._dimension), dtype=np.float32)
        attributes: list[dict[str, list[str]] | None] = []
        for i, item in enumerate(request.items):
            field = f"items[{i}]"
            ids.append(require_id(item.item_id, f"{field}.item_id"))
            vectors[i] = _vector(item.vector, f"{field}.vector", self._dimension)
            attributes.append(_attributes(item.attributes, f"{field}.attributes"))
        count = await self._write(self._store.upsert, ids, vectors, attributes)
        if self._metrics is not None:
            self._metrics.upserted.inc(count)
        return retrieval_service_pb2.UpsertResponse(upserted_count=count)

    async def Delete(self, request, context):
        check_batch(len(request.item_ids), "item_ids", MAX_ID_LIST)
        ids = check_ids(request.item_ids, "item_ids")
        count = await self._write(self._store.delete, ids)
        if self._metrics is not None:
            self._metrics.deleted.inc(count)
        return retrieval_service_pb2.DeleteResponse(deleted_count=count)

    async def GetStats(self, request, context):
        stats = await self._read(self._store.stats)
        placement = self._store.placement
        return retrieval_service_pb2.GetStatsResponse(
            item_count=stats.item_count,
            dimension=stats.dimension,
            capacity=stats.capacity,
            tombstone_count=stats.tombstone_count,
            metric=stats.metric,
            shard_index=placement.shard_index if placement else 0,
            shard_count=placement.placement.shard_count if placement else 1,
            wal_records=self._store.wal_records,
        )


def _vector(values, field: str, dimension: int) -> np.ndarray:
    if len(values) != dimension:
        raise InvalidArgument(field, f"has {len(values)} dimensions, the index has {dimension}")
    vector = np.asarray(values, dtype=np.float32)
    if not np.all(np.isfinite(vector)):
        raise InvalidArgument(field, "contains NaN or infinity")
    norm = float(np.linalg.norm(vector))
    if not norm > 0 or not math.isfinite(norm):
        raise InvalidArgument(field, "has zero length; cosine similarity needs a direction")
    return vector


def _attributes(attributes, field: str) -> dict[str, list[str]] | None:
    if not attributes:
        return None
    if len(attributes) > MAX_ATTRIBUTE_KEYS:
        raise InvalidArgument(field, f"{len(attributes)} keys, at most {MAX_ATTRIBUTE_KEYS} allowed")
    result = {}
    for key, values in attributes.items():
        if not key:
            raise InvalidArgument(field, "attribute keys must not be empty")
        if len(values.values) > MAX_ATTRIBUTE_VALUES:
            raise InvalidArgument(f"{field}[{key}]", f"{len(values.values)} values, at most {MAX_ATTRIBUTE_VALUES}")
        result[key] = list(values.values)
    return result


def servicer_for(store: IndexStore, settings) -> RetrievalServicer:
    return RetrievalServicer(store, settings.search_threads)

