"""Ranking worker process: builds the model and batcher, serves gRPC, stops gracefully."""

from __future__ import annotations

import argparse
import asyncio
import logging
from contextlib import AsyncExitStack

from lmrec.grpc_server import die_with_parent
from lmrec.logging_setup import configure_logging
from lmrec.service import Listening, Running, ServiceSpec, listen, run_service
from lmrec.service_flags import settings_from_flags
from lmrec.v1 import ranking_service_pb2, ranking_service_pb2_grpc
from ranking_service.batcher import MicroBatcher
from ranking_service.metrics import RankingMetrics
from ranking_service.hot_swap import BundleSwapper, Serving, ServingHolder, run_periodically
from ranking_service.model import LoadedModel, load_model
from ranking_service.servicer import ITEM_LANE, QUERY_LANE, RankingServicer
from ranking_service.settings import RankingSettings

log = logging.getLogger(__name__)
SERVICE_NAME = ranking_service_pb2.DESCRIPTOR.services_by_name["RankingService"].full_name


def create_server(settings: RankingSettings, holder: ServingHolder, metrics: RankingMetrics | None = None) -> Listening:
    """Builds the ranking server, bound, not yet started."""
    return listen(settings, [SERVICE_NAME],
                  lambda server: ranking_service_pb2_grpc.add_RankingServiceServicer_to_server(
                      RankingServicer(holder), server),
                  "ranking", rpc_metrics=metrics.rpc if metrics is not None else None)


def new_batcher(settings: RankingSettings, model: LoadedModel, metrics: RankingMetrics | None = None) -> MicroBatcher:
    """One batcher per model, with a lane for queries and one for item texts (one lane if one encoder)."""
    lanes = {QUERY_LANE: model.encoder.encode, ITEM_LANE: model.item_text_encoder.encode}
    return MicroBatcher(lanes, settings.max_batch_texts, settings.max_wait_ms, settings.max_queue, metrics)


def describe_model(holder: ServingHolder) -> dict[str, str]:
    """The labels of `lmrec_model_info`: which model serves, and how."""
    model = holder.current.model
    return {"model_version": model.manifest.model_version, "ranker_kind": model.manifest.ranker_kind,
            "encoder": model.manifest.encoder.base_model, "precision": model.runtime.precision,
            "execution_provider": model.runtime.providers[0]}


async def serve(settings: RankingSettings) -> None:
    async def build(metrics: RankingMetrics | None, resources: AsyncExitStack) -> Running:
        model = await asyncio.to_thread(load_model, settings)
        batcher = new_batcher(settings, model, metrics)
        batcher.start()
        holder = ServingHolder(Serving(model, batcher))

        async def close_serving() -> None:  # whichever model serves by then (hot swap replaces it)
            await holder.current.batcher.close()
            holder.current.model.store.close()

        resources.push_async_callback(close_serving)
        if metrics is not None:
            metrics.watch_model(lambda: describe_model(holder), lambda: len(holder.current.model.store),
                                lambda: holder.swaps)
        background = []
        if settings.reload_interval_s:
            swapper = BundleSwapper(settings, holder, lambda m: new_batcher(settings, m, metrics))
            background.append(run_periodically(swapper.swap_if_new, settings.reload_interval_s))
        return Running(create_server(settings, holder, metrics), f"model {model.manifest.model_version}", background)

    await run_service(settings, ServiceSpec("ranking", RankingMetrics), build)


def worker_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The ranking worker's flags; the Ray Serve front-end adds its own to them."""
    return argparse.ArgumentParser(prog=prog, description=description)


def parse_settings(argv: list[str] | None) -> RankingSettings:
    return settings_from_flags(worker_parser("lmrec-ranking", "lmrec ranking worker"), argv, RankingSettings)


def main(argv: list[str] | None = None) -> None:
    configure_logging("ranking")
    die_with_parent()
    asyncio.run(serve(parse_settings(argv)))


if __name__ == "__main__":
    main()
