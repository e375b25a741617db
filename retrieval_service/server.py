"""Builds, starts and stops the retrieval server."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1.health import aio as health_aio

from lmrec.grpc_server import (add_health_and_reflection, bind, die_with_parent, new_server, serve_until_signalled,
                               set_health)
from lmrec.logging_setup import configure_logging
from lmrec.metrics_http import MetricsServer, metrics_off, start_metrics
from lmrec.service_flags import settings_from_flags, write_port_file
from lmrec.sharding import Placement
from lmrec.tracing import start_tracing
from lmrec.v1 import retrieval_service_pb2_grpc
from retrieval_service import admin
from retrieval_service.index import VectorIndex
from retrieval_service.placement import PlacementMismatch, ShardPlacement
from retrieval_service.servicer import RetrievalServicer
from retrieval_service.settings import RetrievalSettings
from retrieval_service.store import IndexStore

if TYPE_CHECKING:
    from retrieval_service.metrics import RetrievalMetrics

SERVICE_NAME = "lmrec.v1.RetrievalService"
log = logging.getLogger(__name__)


def create_server(
    settings: RetrievalSettings, index: IndexStore | VectorIndex, metrics: RetrievalMetrics | None = None
) -> tuple[grpc.aio.Server, int, health_aio.HealthServicer]:
    """Builds the retrieval server, not yet started; returns it, the bound port and its health servicer.

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
    server = new_server(rpc_metrics=metrics.rpc if metrics is not None else None)
    if metrics is not None:
        metrics.watch_items(lambda: len(store.index))
    servicer = RetrievalServicer(store, settings.search_threads, metrics)
    retrieval_service_pb2_grpc.add_RetrievalServiceServicer_to_server(servicer, server)
    admin.add_to_server(server, store)
    health = add_health_and_reflection(server, [SERVICE_NAME])
    port = bind(server, settings.host, settings.port, settings.server_tls().credentials("retrieval"))
    return server, port, health


async def serve(settings: RetrievalSettings) -> None:
    """Recovers the index from `settings.data_dir`, serves until SIGTERM/SIGINT, then snapshots."""
    tracer_provider = start_tracing("retrieval", settings, **{"lmrec.shard_index": settings.shard_index})
    try:
        store = await asyncio.to_thread(IndexStore.open, settings)
    except PlacementMismatch as exc:
        raise SystemExit(f"retrieval shard {settings.shard_index}: {exc}") from None
    metrics, metrics_server = metrics_for(settings)
    server, port, health = create_server(settings, store, metrics)
    await server.start()
    if settings.port_file is not None:
        write_port_file(settings.port_file, port)
    await set_health(health, [SERVICE_NAME], serving=True)
    log.info("retrieval %s serving on %s:%d (%d items)", store.placement.describe(), settings.host, port,
             len(store.index))
    await serve_until_signalled(server, health, [SERVICE_NAME], settings.grace_seconds, settings.drain_s)
    # A snapshot on the way out makes the next start a load instead of a log replay.
    await asyncio.to_thread(store.snapshot)
    await asyncio.to_thread(store.close)
    if metrics_server is not None:
        metrics_server.close()
    if tracer_provider is not None:
        tracer_provider.shutdown()


def metrics_for(settings: RetrievalSettings) -> tuple[RetrievalMetrics | None, MetricsServer | None]:
    """The shard's Prometheus metrics and their HTTP endpoint, or (None, None) when metrics are off."""
    if metrics_off(settings):
        return None, None
    from retrieval_service.metrics import RetrievalMetrics

    return start_metrics(RetrievalMetrics, settings, f"retrieval shard {settings.shard_index}")


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
    die_with_parent()
    asyncio.run(serve(parse_settings(argv)))
