"""Builds, starts and stops the retrieval server."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

import grpc
from grpc_health.v1.health import aio as health_aio

from lmrec.grpc_server import add_health_and_reflection, bind, new_server, serve_until_signalled, set_health
from lmrec.logging_setup import configure_logging
from lmrec.service_flags import settings_from_flags, write_port_file
from lmrec.sharding import Placement
from lmrec.v1 import retrieval_service_pb2_grpc
from retrieval_service import admin
from retrieval_service.index import VectorIndex
from retrieval_service.placement import PlacementMismatch, ShardPlacement
from retrieval_service.servicer import RetrievalServicer
from retrieval_service.settings import RetrievalSettings
from retrieval_service.store import IndexStore

SERVICE_NAME = "lmrec.v1.RetrievalService"
log = logging.getLogger(__name__)


def create_server(
    settings: RetrievalSettings, index: IndexStore | VectorIndex
) -> tuple[grpc.aio.Server, int, health_aio.HealthServicer]:
    """Builds the retrieval server, not yet started; returns it, the bound port and its health servicer.

    Args:
        settings: host, port (0 picks a free one), shard identity, search threads.
        index: an `IndexStore` (durable writes; its recorded placement wins) or a bare `VectorIndex`
            (in-memory, e.g. for tests).
    """
    requested = ShardPlacement(settings.shard_index, Placement(settings.shard_count))
    store = index if isinstance(index, IndexStore) else IndexStore(index, placement=requested)
    if store.placement is None:
        store.placement = requested
    server = new_server()
    servicer = RetrievalServicer(store, settings.search_threads)
    retrieval_service_pb2_grpc.add_RetrievalServiceServicer_to_server(servicer, server)
    admin.add_to_server(server, store)
    health = add_health_and_reflection(server, [SERVICE_NAME])
    port = bind(server, settings.host, settings.port)
    return server, port, health


async def serve(settings: RetrievalSettings) -> None:
    """Recovers the index from `settings.data_dir`, serves until SIGTERM/SIGINT, then snapshots."""
    try:
        store = await asyncio.to_thread(IndexStore.open, settings)
    except PlacementMismatch as exc:
        raise SystemExit(f"retrieval shard {settings.shard_index}: {exc}") from None
    server, port, health = create_server(settings, store)
    await server.start()
    if settings.port_file is not None:
        write_port_file(settings.port_file, port)
    await set_health(health, [SERVICE_NAME], serving=True)
    log.info("retrieval %s serving on %s:%d (%d items)", store.placement.describe(), settings.host, port,
             len(store.index))
    await serve_until_signalled(server, health, [SERVICE_NAME], settings.grace_seconds)
    # A snapshot on the way out makes the next start a load instead of a log replay.
    await asyncio.to_thread(store.snapshot)
    await asyncio.to_thread(store.close)


def parse_settings(argv: list[str] | None = None) -> RetrievalSettings:
    """Flags over `LMREC_RETRIEVAL_*` environment over defaults; only flags given on the command line override."""
    parser = argparse.ArgumentParser(prog="retrieval_service", description="lmrec HNSW retrieval shard")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving (useful with --port 0)")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--dimension", type=int)
    parser.add_argument("--shard-index", type=int)
    parser.add_argument("--shard-count", type=int)
    return settings_from_flags(parser, argv, RetrievalSettings)


def main(argv: list[str] | None = None) -> None:
    configure_logging("retrieval")
    asyncio.run(serve(parse_settings(argv)))
