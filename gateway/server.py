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
from gateway.limits import largest_request_bytes
from gateway.store import State, open_state
from gateway.policy.scenarios import Scenarios
from gateway.recommend import RecommendPipeline
from gateway.reindex import IndexReconciler
from gateway.servicer import GatewayServicer
from gateway.settings import GatewaySettings
from lmrec.auth import AuthInterceptor, TokenBucket, TokenStore, ensure_admin_token
from lmrec.grpc_server import (AdmissionInterceptor, add_health_and_reflection, bind, die_with_parent, new_server,
                               serve_until_signalled, set_health)
from lmrec.logging_setup import configure_logging
from lmrec.metrics_http import MetricsServer, metrics_off, start_metrics
from lmrec.service_flags import settings_from_flags, write_port_file
from lmrec.sharding import ShardMap
from lmrec.tracing import start_tracing
from lmrec.v1 import gateway_service_pb2, gateway_service_pb2_grpc

if TYPE_CHECKING:
    from gateway.audit import AuditLog
    from gateway.conversation.sessions import SessionStore
    from gateway.metrics import GatewayMetrics
    from gateway.store import GatewayStore
    from gateway.store.postgres import PostgresStore

log = logging.getLogger(__name__)
SERVICE_NAME = gateway_service_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
RECOMMEND = f"/{SERVICE_NAME}/Recommend"
# The role each public method needs (lmrec/auth.py; roles nest read < write < admin).
METHOD_ROLES = {"Recommend": "read", "GetItems": "read", "UpsertItems": "write", "DeleteItems": "write",
                "RecordFeedback": "write", "GetUserHistory": "admin", "DeleteUserData": "admin"}


def create_server(settings: GatewaySettings, store: GatewayStore | PostgresStore, ranking: RankingClient,
                  retrieval: ShardedRetrievalClient, metrics: GatewayMetrics | None = None,
                  impressions: ImpressionLog | None = None, scenarios: Scenarios | None = None,
                  sessions: SessionStore | None = None, auth: AuthInterceptor | None = None,
                  audit: AuditLog | None = None):
    """Builds the gateway server, not yet started; returns it, the bound port and the health servicer.
    Without `sessions`, requests carrying a session_id are refused (FAILED_PRECONDITION); without `auth`,
    every caller may call everything."""
    admission = AdmissionInterceptor({RECOMMEND: settings.max_in_flight_recommends},
                                     settings.admission_latency_tolerance)
    # Authentication before admission: a refused caller never takes an in-flight slot.
    server = new_server([auth, admission] if auth else [admission], max_receive_bytes=largest_request_bytes(),
                        rpc_metrics=metrics.rpc if metrics is not None else None)
    scenarios = scenarios or Scenarios(settings.scenarios_file)
    if metrics is not None:
        metrics.declare_scenarios(scenarios.labels)
    conversation = None
    if sessions is not None:
        conversation = Conversation(sessions, VocabularyCache.for_store(store), lambda: store.catalog)
    pipeline = RecommendPipeline(settings, store, ranking, retrieval, scenarios, impressions, metrics, conversation)
    servicer = GatewayServicer(settings, store, ranking, retrieval, pipeline, impressions, conversation, audit)
    gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)
    health = add_health_and_reflection(server, [SERVICE_NAME])
    port = bind(server, settings.host, settings.port, settings.server_tls().credentials("gateway"))
    return server, port, health


def auth_for(settings: GatewaySettings) -> AuthInterceptor | None:
    """The public API's token check from settings; with no token configured, a generated admin token."""
    if settings.auth_disabled:
        log.warning("authentication is OFF (auth_disabled): any caller may read, write and erase user data")
        return None
    inline = settings.auth_tokens.get_secret_value() if settings.auth_tokens else ""
    path = settings.auth_tokens_file
    if path is None and not inline:
        path, token_path = ensure_admin_token(Path(settings.state_dir) / "tokens")
        log.warning("no tokens configured: an admin token is in %s; clients: export LMREC_TOKEN=$(cat %s)",
                    token_path, token_path)
    try:
        tokens = TokenStore(path, inline)
    except ValueError as exc:
        raise SystemExit(f"lmrec-gateway: invalid settings\n{exc}") from None
    limiter = TokenBucket(settings.rate_limit_per_s, settings.rate_limit_burst) if settings.rate_limit_per_s else None
    log.info("bearer-token authentication on: %d tokens%s", len(tokens),
             f", {settings.rate_limit_per_s:g} calls/s per token" if limiter else "")
    return AuthInterceptor(tokens, SERVICE_NAME, METHOD_ROLES, limiter)


async def serve(settings: GatewaySettings) -> None:
    scenarios = Scenarios(settings.scenarios_file)  # a bad file stops the gateway here, naming the field
    tracer_provider = start_tracing("gateway", settings)  # before the downstream channels: they carry it
    # Database calls run on worker threads (never on the event loop): one per pooled connection, and some.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(settings.database_pool_size + 4, thread_name_prefix="gateway-db"))
    state: State = open_state(settings)
    store = state.store
    log.info("gateway state: %s", "SQLite under " + str(settings.state_dir) if state.engine == "sqlite"
             else "PostgreSQL (shared by every replica)")
    auth = auth_for(settings)
    workers = settings.worker_tls()
    ranking = RankingClient(settings.ranking_address, workers)
    try:
        retrieval = ShardedRetrievalClient(ShardMap.load(settings.retrieval_shard_map) if settings.retrieval_shard_map
                                           else settings.retrieval_addresses, workers)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"lmrec-gateway: invalid settings\nretrieval_shard_map: {exc}") from None
    metrics, metrics_server = metrics_for(settings)
    server, port, health = create_server(settings, store, ranking, retrieval, metrics, state.impressions, scenarios,
                                         state.sessions, auth, state.audit)
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
        await serve_until_signalled(server, health, [SERVICE_NAME], settings.grace_seconds, settings.drain_s)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await ranking.close()
        await retrieval.close()
        state.close()
        if metrics_server is not None:
            metrics_server.close()
        if tracer_provider is not None:
            tracer_provider.shutdown()


def metrics_for(settings: GatewaySettings) -> tuple[GatewayMetrics | None, MetricsServer | None]:
    """The gateway's Prometheus metrics and their HTTP endpoint, or (None, None) when metrics are off."""
    if metrics_off(settings):
        return None, None
    from gateway.metrics import GatewayMetrics

    return start_metrics(GatewayMetrics, settings, "gateway")


def parse_settings(argv: list[str] | None) -> GatewaySettings:
    parser = argparse.ArgumentParser(prog="lmrec-gateway", description="lmrec gateway")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--ranking-address")
    parser.add_argument("--retrieval-addresses", help="comma-separated, one per shard in shard order")
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--scenarios-file", type=Path, help="per-scenario policies (TOML), re-read on change")
    parser.add_argument("--session-ttl-s", type=float,
                        help="a conversation session expires this long after its last turn")
    parser.add_argument("--session-max-turns", type=int, help="turns a session keeps (the oldest are dropped)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    return settings_from_flags(parser, argv, GatewaySettings)


def main(argv: list[str] | None = None) -> None:
    configure_logging("gateway")
    die_with_parent()
    asyncio.run(serve(parse_settings(argv)))


if __name__ == "__main__":
    main()
