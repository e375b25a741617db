"""Gateway process: durable store, long-lived downstream channels, the public gRPC API."""

from __future__ import annotations

import argparse
import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.conversation.turns import Conversation
from gateway.conversation.vocabulary import VocabularyCache
from gateway.downstream import RankingClient, ShardedRetrievalClient
from gateway.impressions import ImpressionLog
from gateway.store import State, open_state
from gateway.policy.scenarios import Scenarios
from gateway.recommend import RecommendPipeline
from gateway.reindex import IndexReconciler
from gateway.servicer import GatewayServicer
from gateway.settings import GatewaySettings
from lmrec.grpc_server import (AdmissionInterceptor, add_health_and_reflection, bind, new_server,
                               serve_until_signalled, set_health)
from lmrec.logging_setup import configure_logging
from lmrec.metrics_http import MetricsServer, start_metrics
from lmrec.service_flags import settings_from_flags, write_port_file
from lmrec.sharding import ShardMap
from lmrec.v1 import gateway_service_pb2, gateway_service_pb2_grpc

if TYPE_CHECKING:
    from gateway.conversation.sessions import SessionStore
    from gateway.metrics import GatewayMetrics
    from gateway.store import GatewayStore
    from gateway.store.postgres import PostgresStore

log = logging.getLogger(__name__)
SERVICE_NAME = gateway_service_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
RECOMMEND = f"/{SERVICE_NAME}/Recommend"


def create_server(settings: GatewaySettings, store: GatewayStore | PostgresStore, ranking: RankingClient,
                  retrieval: ShardedRetrievalClient, metrics: GatewayMetrics | None = None,
                  impressions: ImpressionLog | None = None, scenarios: Scenarios | None = None,
                  sessions: SessionStore | None = None):
    """Builds the gateway server, not yet started; returns it, the bound port and the health servicer.
    Without `sessions`, requests carrying a session_id are refused (FAILED_PRECONDITION)."""
    server = new_server([AdmissionInterceptor({RECOMMEND: settings.max_in_flight_recommends})])
    scenarios = scenarios or Scenarios(settings.scenarios_file)
    if metrics is not None:
        metrics.declare_scenarios(scenarios.labels)
    conversation = None
    if sessions is not None:
        conversation = Conversation(sessions, VocabularyCache.for_store(store), lambda: store.catalog)
    pipeline = RecommendPipeline(settings, store, ranking, retrieval, scenarios, impressions, metrics, conversation)
    servicer = GatewayServicer(settings, store, ranking, retrieval, pipeline, impressions, conversation)
    gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)
    health = add_health_and_reflection(server, [SERVICE_NAME])
    port = bind(server, settings.host, settings.port)
    return server, port, health


async def serve(settings: GatewaySettings) -> None:
    scenarios = Scenarios(settings.scenarios_file)  # a bad file stops the gateway here, naming the field
    # Database calls run on worker threads (never on the event loop): one per pooled connection, and some.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(settings.database_pool_size + 4, thread_name_prefix="gateway-db"))
    state: State = open_state(settings)
    store = state.store
    log.info("gateway state: %s", "SQLite under " + str(settings.state_dir) if state.engine == "sqlite"
             else "PostgreSQL (shared by every replica)")
    ranking = RankingClient(settings.ranking_address)
    try:
        retrieval = ShardedRetrievalClient(ShardMap.load(settings.retrieval_shard_map) if settings.retrieval_shard_map
                                           else settings.retrieval_addresses)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"lmrec-gateway: invalid settings\nretrieval_shard_map: {exc}") from None
    metrics, metrics_server = metrics_for(settings)
    server, port, health = create_server(settings, store, ranking, retrieval, metrics, state.impressions, scenarios,
                                         state.sessions)
    await server.start()
    await set_health(health, [SERVICE_NAME], serving=True)
    log.info("gateway serving on %s:%d (ranking %s, retrieval %s)", settings.host, port,
             settings.ranking_address, retrieval.addresses)
    if settings.port_file:
        write_port_file(settings.port_file, port)
    background = []
    if settings.reindex_interval_s:
        background.append(asyncio.create_task(
            IndexReconciler(store, ranking, retrieval).run(settings.reindex_interval_s)))
    if settings.retrieval_shard_map:
        background.append(asyncio.create_task(retrieval.watch(settings.retrieval_shard_map, settings.shard_map_poll_s)))
    try:
        await serve_until_signalled(server, health, [SERVICE_NAME], settings.grace_seconds)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await ranking.close()
        await retrieval.close()
        state.close()
        if metrics_server is not None:
            metrics_server.close()


def metrics_for(settings: GatewaySettings) -> tuple[GatewayMetrics | None, MetricsServer | None]:
    """Recommend's Prometheus metrics and their HTTP endpoint, or (None, None) when metrics_port is 0."""
    if not settings.metrics_port:
        return None, None
    from gateway.metrics import GatewayMetrics  # prometheus_client is needed only when metrics are on

    return start_metrics(GatewayMetrics, settings.host, settings.metrics_port, "gateway")


def parse_settings(argv: list[str] | None) -> GatewaySettings:
    parser = argparse.ArgumentParser(prog="lmrec-gateway", description="lmrec gateway")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--ranking-address")
    parser.add_argument("--retrieval-addresses", help="comma-separated, one per shard in shard order")
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (0 = off)")
    parser.add_argument("--scenarios-file", type=Path, help="per-scenario policies (TOML), re-read on change")
    parser.add_argument("--session-ttl-s", type=float,
                        help="a conversation session expires this long after its last turn")
    parser.add_argument("--session-max-turns", type=int, help="turns a session keeps (the oldest are dropped)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    return settings_from_flags(parser, argv, GatewaySettings)


def main(argv: list[str] | None = None) -> None:
    configure_logging("gateway")
    asyncio.run(serve(parse_settings(argv)))


if __name__ == "__main__":
    main()
