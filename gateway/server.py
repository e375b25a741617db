"""Gateway process: durable store, long-lived downstream channels, the public gRPC API."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from gateway.downstream import RankingClient, ShardedRetrievalClient
from gateway.servicer import GatewayServicer
from gateway.settings import GatewaySettings
from gateway.store import GatewayStore
from lmrec.grpc_server import add_health_and_reflection, bind, new_server, serve_until_signalled, set_health
from lmrec.logging_setup import configure_logging
from lmrec.service_flags import settings_from_flags, write_port_file
from lmrec.v1 import gateway_service_pb2, gateway_service_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = gateway_service_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name


def create_server(settings: GatewaySettings, store: GatewayStore, ranking: RankingClient,
                  retrieval: ShardedRetrievalClient):
    """Builds the gateway server, not yet started; returns it, the bound port and the health servicer."""
    server = new_server()
    gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server(
        GatewayServicer(settings, store, ranking, retrieval), server)
    health = add_health_and_reflection(server, [SERVICE_NAME])
    port = bind(server, settings.host, settings.port)
    return server, port, health


async def serve(settings: GatewaySettings) -> None:
    store = GatewayStore(Path(settings.state_dir) / "gateway.sqlite")
    ranking = RankingClient(settings.ranking_address)
    retrieval = ShardedRetrievalClient(settings.retrieval_addresses)
    server, port, health = create_server(settings, store, ranking, retrieval)
    await server.start()
    await set_health(health, [SERVICE_NAME], serving=True)
    log.info("gateway serving on %s:%d (ranking %s, retrieval %s)", settings.host, port,
             settings.ranking_address, settings.retrieval_addresses)
    if settings.port_file:
        write_port_file(settings.port_file, port)
    try:
        await serve_until_signalled(server, health, [SERVICE_NAME], settings.grace_seconds)
    finally:
        await ranking.close()
        await retrieval.close()
        store.close()


def parse_settings(argv: list[str] | None) -> GatewaySettings:
    parser = argparse.ArgumentParser(prog="lmrec-gateway", description="lmrec gateway")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--ranking-address")
    parser.add_argument("--retrieval-addresses", help="comma-separated, one per shard in shard order")
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    return settings_from_flags(parser, argv, GatewaySettings)


def main(argv: list[str] | None = None) -> None:
    configure_logging("gateway")
    asyncio.run(serve(parse_settings(argv)))


if __name__ == "__main__":
    main()
