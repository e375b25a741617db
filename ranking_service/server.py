"""Ranking worker process: builds the model and batcher, serves gRPC, stops gracefully."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

import grpc

from lmrec.grpc_server import add_health_and_reflection, bind, new_server, serve_until_signalled, set_health
from lmrec.logging_setup import configure_logging
from lmrec.service_flags import settings_from_flags, write_port_file
from lmrec.v1 import ranking_service_pb2, ranking_service_pb2_grpc
from ranking_service.batcher import MicroBatcher
from ranking_service.model import LoadedModel, load_model
from ranking_service.servicer import RankingServicer
from ranking_service.settings import RankingSettings

log = logging.getLogger(__name__)
SERVICE_NAME = ranking_service_pb2.DESCRIPTOR.services_by_name["RankingService"].full_name


def create_server(settings: RankingSettings, model: LoadedModel, batcher: MicroBatcher):
    """Builds the ranking server, not yet started; returns it, the bound port and the health servicer."""
    server = new_server()
    ranking_service_pb2_grpc.add_RankingServiceServicer_to_server(RankingServicer(model, batcher), server)
    health = add_health_and_reflection(server, [SERVICE_NAME])
    port = bind(server, settings.host, settings.port)
    return server, port, health


def new_batcher(settings: RankingSettings, model: LoadedModel) -> MicroBatcher:
    return MicroBatcher(model.encoder.encode, settings.max_batch_texts, settings.max_wait_ms, settings.max_queue)


async def serve(settings: RankingSettings) -> None:
    model = await asyncio.to_thread(load_model, settings)
    batcher = new_batcher(settings, model)
    batcher.start()
    server, port, health = create_server(settings, model, batcher)
    await server.start()
    await set_health(health, [SERVICE_NAME], serving=True)
    log.info("ranking worker serving on %s:%d", settings.host, port)
    if settings.port_file:
        write_port_file(settings.port_file, port)
    try:
        await serve_until_signalled(server, health, [SERVICE_NAME], settings.grace_seconds)
    finally:
        await batcher.close()
        model.store.close()


def parse_settings(argv: list[str] | None) -> RankingSettings:
    parser = argparse.ArgumentParser(prog="lmrec-ranking", description="lmrec ranking worker")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--bundle-dir", type=Path)
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--precision")
    parser.add_argument("--device")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    return settings_from_flags(parser, argv, RankingSettings)


def main(argv: list[str] | None = None) -> None:
    configure_logging("ranking")
    asyncio.run(serve(parse_settings(argv)))


if __name__ == "__main__":
    main()
