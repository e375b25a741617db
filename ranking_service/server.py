"""Ranking worker process: builds the model and batcher, serves gRPC, stops gracefully."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from lmrec.grpc_server import (add_health_and_reflection, bind, die_with_parent, new_server, serve_until_signalled,
                               set_health)
from lmrec.logging_setup import configure_logging
from lmrec.metrics_http import MetricsServer, metrics_off, start_metrics
from lmrec.tracing import start_tracing
from lmrec.service_flags import settings_from_flags, write_port_file
from lmrec.v1 import ranking_service_pb2, ranking_service_pb2_grpc
from ranking_service.batcher import MicroBatcher
from ranking_service.hot_swap import BundleSwapper, Serving, ServingHolder, run_periodically
from ranking_service.model import LoadedModel, load_model
from ranking_service.servicer import ITEM_LANE, QUERY_LANE, RankingServicer
from ranking_service.settings import RankingSettings

if TYPE_CHECKING:
    from ranking_service.metrics import RankingMetrics

log = logging.getLogger(__name__)
SERVICE_NAME = ranking_service_pb2.DESCRIPTOR.services_by_name["RankingService"].full_name


def create_server(settings: RankingSettings, holder: ServingHolder, metrics: RankingMetrics | None = None):
    """Builds the ranking server, not yet started; returns it, the bound port and the health servicer."""
    server = new_server(rpc_metrics=metrics.rpc if metrics is not None else None)
    ranking_service_pb2_grpc.add_RankingServiceServicer_to_server(RankingServicer(holder), server)
    health = add_health_and_reflection(server, [SERVICE_NAME])
    port = bind(server, settings.host, settings.port, settings.server_tls().credentials("ranking"))
    return server, port, health


def new_batcher(settings: RankingSettings, model: LoadedModel, metrics: RankingMetrics | None = None) -> MicroBatcher:
    """One batcher per model, with a lane for queries and one for item texts (one lane if one encoder)."""
    lanes = {QUERY_LANE: model.encoder.encode, ITEM_LANE: model.item_text_encoder.encode}
    return MicroBatcher(lanes, settings.max_batch_texts, settings.max_wait_ms, settings.max_queue, metrics)


def metrics_for(settings: RankingSettings) -> tuple[RankingMetrics | None, MetricsServer | None]:
    """The worker's Prometheus metrics and their HTTP endpoint, or (None, None) when metrics are off."""
    if metrics_off(settings):
        return None, None
    from ranking_service.metrics import RankingMetrics

    return start_metrics(RankingMetrics, settings, "ranking")


def describe_model(holder: ServingHolder) -> dict[str, str]:
    """The labels of `lmrec_model_info`: which model serves, and how."""
    model = holder.current.model
    return {"model_version": model.manifest.model_version, "ranker_kind": model.manifest.ranker_kind,
            "encoder": model.manifest.encoder.base_model, "precision": model.runtime.precision,
            "execution_provider": model.runtime.providers[0]}


async def serve(settings: RankingSettings) -> None:
    tracer_provider = start_tracing("ranking", settings)
    model = await asyncio.to_thread(load_model, settings)
    metrics, metrics_server = metrics_for(settings)
    batcher = new_batcher(settings, model, metrics)
    batcher.start()
    holder = ServingHolder(Serving(model, batcher))
    if metrics is not None:
        metrics.watch_model(lambda: describe_model(holder), lambda: len(holder.current.model.store),
                            lambda: holder.swaps)
    server, port, health = create_server(settings, holder, metrics)
    await server.start()
    await set_health(health, [SERVICE_NAME], serving=True)
    log.info("ranking worker serving on %s:%d", settings.host, port)
    if settings.port_file:
        write_port_file(settings.port_file, port)
    watcher = None
    if settings.reload_interval_s:
        swapper = BundleSwapper(settings, holder, lambda m: new_batcher(settings, m, metrics))
        watcher = asyncio.create_task(run_periodically(swapper.swap_if_new, settings.reload_interval_s))
    try:
        await serve_until_signalled(server, health, [SERVICE_NAME], settings.grace_seconds, settings.drain_s)
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await holder.current.batcher.close()
        holder.current.model.store.close()
        if metrics_server is not None:
            metrics_server.close()
        if tracer_provider is not None:
            tracer_provider.shutdown()


def worker_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The ranking worker's flags; the Ray Serve front-end adds its own to them."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--bundle-dir", type=Path)
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--precision")
    parser.add_argument("--device")
    parser.add_argument("--item-precision", help="fp32 (default) or serving: the encoder precision for item texts")
    parser.add_argument("--reload-interval-s", type=float, help="seconds between checks for a new bundle (0 = off)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    return parser


def parse_settings(argv: list[str] | None) -> RankingSettings:
    return settings_from_flags(worker_parser("lmrec-ranking", "lmrec ranking worker"), argv, RankingSettings)


def main(argv: list[str] | None = None) -> None:
    configure_logging("ranking")
    die_with_parent()
    asyncio.run(serve(parse_settings(argv)))


if __name__ == "__main__":
    main()
