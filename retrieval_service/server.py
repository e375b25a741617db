"""Builds, starts and stops the retrieval server."""

from __future__ import annotations

import argparse
import asyncio
import logging
from contextlib import AsyncExitStack

import grpc

from lmrec.grpc_server import die_with_parent
from lmrec.logging_setup import configure_logging
from lmrec.service import Listening, Running, ServiceSpec, listen, run_service
from lmrec.service_flags import settings_from_flags
from lmrec.sharding import Placement
from lmrec.v1 import retrieval_service_pb2_grpc
from retrieval_service import admin
from retrieval_service.index import VectorIndex
from retrieval_service.metrics import RetrievalMetrics
from retrieval_service.placement import PlacementMismatch, ShardPlacement
from retrieval_service.servicer import RetrievalServicer
from retrieval_service.settings import RetrievalSettings
from retrieval_service.store import IndexStore

SERVICE_NAME = "lmrec.v1.RetrievalService"
log = logging.getLogger(__name__)


def create_server(settings: RetrievalSettings, index: IndexStore | VectorIndex,
                  metrics: RetrievalMetrics | None = None) -> Listening:
    """Builds the retrieval server, bound, not yet started.

    Args:
        settings: host, port (0 picks a free one), shard identity, search threads.
        index: an `IndexStore` (durable writes; its recorded placement wins) or a bare `VectorIndex`
            (in-memory, e.g. for tests).
        metrics: Prometheus metrics of the shard and its RPCs (None: none kept).
    """
    requested = ShardPlacement(settings.shard_index, Placement(settings.shard_count))
    store = index if isinstance(index, IndexStore) else IndexStore(index, placement=requested)
    if store.placement is None:
        store.placement = requested
    if metrics is not None:
        metrics.watch_items(lambda: len(store.index))
    servicer = RetrievalServicer(store, settings.search_threads, metrics)

    def register(server: grpc.aio.Server) -> None:
        retrieval_service_pb2_grpc.add_RetrievalServiceServicer_to_server(servicer, server)
        admin.add_to_server(server, store)

    return listen(settings, [SERVICE_NAME], register, "retrieval",
                  rpc_metrics=metrics.rpc if metrics is not None else None)


async def serve(settings: RetrievalSettings) -> None:
    """Recovers the index from `settings.data_dir`, serves until SIGTERM/SIGINT, then snapshots."""

    async def build(metrics: RetrievalMetrics | None, resources: AsyncExitStack) -> Running:
        try:
            store = await asyncio.to_thread(IndexStore.open, settings)
        except PlacementMismatch as exc:
            raise SystemExit(f"retrieval shard {settings.shard_index}: {exc}") from None

        async def snapshot_and_close() -> None:
            # A snapshot on the way out makes the next start a load instead of a log replay.
            await asyncio.to_thread(store.snapshot)
            await asyncio.to_thread(store.close)

        resources.push_async_callback(snapshot_and_close)
        listening = create_server(settings, store, metrics)
        return Running(listening, f"{store.placement.describe()}, {len(store.index)} items")

    spec = ServiceSpec("retrieval", RetrievalMetrics, {"lmrec.shard_index": settings.shard_index})
    await run_service(settings, spec, build)


def parse_settings(argv: list[str] | None = None) -> RetrievalSettings:
    """Flags over `LMREC_RETRIEVAL_*` environment over defaults; only flags given on the command line override."""
    parser = argparse.ArgumentParser(prog="retrieval_service", description="lmrec HNSW retrieval shard")
    return settings_from_flags(parser, argv, RetrievalSettings)


def main(argv: list[str] | None = None) -> None:
    configure_logging("retrieval")
    die_with_parent()
    asyncio.run(serve(parse_settings(argv)))
