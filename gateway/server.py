"""Gateway process: durable store, long-lived downstream channels, the public gRPC API."""

from __future__ import annotations

import argparse
import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.conversation.turns import Conversation
from gateway.conversation.vocabulary import VocabularyCache
from gateway.downstream import RankingClient, ShardedRetrievalClient
from gateway.impressions import ImpressionLog
from gateway.metrics import GatewayMetrics
from gateway.limits import largest_request_bytes
from gateway.store import State, open_state
from gateway.policy.scenarios import Scenarios
from gateway.recommend import RecommendPipeline
from gateway.reindex import IndexReconciler
from gateway.servicer import GatewayServicer
from gateway.settings import GatewaySettings
from lmrec.auth import AuthInterceptor, TokenBucket, TokenStore, ensure_admin_token
from lmrec.grpc_server import AdmissionInterceptor, die_with_parent
from lmrec.logging_setup import configure_logging
from lmrec.service import Listening, Running, ServiceSpec, listen, run_service
from lmrec.service_flags import settings_from_flags
from lmrec.sharding import ShardMap
from lmrec.v1 import gateway_service_pb2, gateway_service_pb2_grpc

if TYPE_CHECKING:
    from gateway.audit import AuditLog
    from gateway.conversation.sessions import SessionStore
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
                  audit: AuditLog | None = None) -> Listening:
    """Builds the gateway server, bound, not yet started. Without `sessions`, requests carrying a
    session_id are refused (FAILED_PRECONDITION); without `auth`, every caller may call everything."""
    admission = AdmissionInterceptor({RECOMMEND: settings.max_in_flight_recommends},
                                     settings.admission_latency_tolerance)
    scenarios = scenarios or Scenarios(settings.scenarios_file)
    if metrics is not None:
        metrics.declare_scenarios(scenarios.labels)
    conversation = None
    if sessions is not None:
        conversation = Conversation(sessions, VocabularyCache.for_store(store), lambda: store.catalog)
    pipeline = RecommendPipeline(settings, store, ranking, retrieval, scenarios, impressions, metrics, conversation)
    servicer = GatewayServicer(settings, store, ranking, retrieval, pipeline, impressions, conversation, audit)
    # Authentication before admission: a refused caller never takes an in-flight slot.
    return listen(settings, [SERVICE_NAME],
                  lambda server: gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server),
                  "gateway", interceptors=[auth, admission] if auth else [admission],
                  rpc_metrics=metrics.rpc if metrics is not None else None,
                  max_receive_bytes=largest_request_bytes())


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

    async def build(metrics: GatewayMetrics | None, resources: AsyncExitStack) -> Running:
        # Database calls run on worker threads (never on the event loop): one per pooled connection, and some.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(settings.database_pool_size + 4, thread_name_prefix="gateway-db"))
        state: State = open_state(settings)
        resources.callback(state.close)
        log.info("gateway state: %s", "SQLite under " + str(settings.state_dir) if state.engine == "sqlite"
                 else "PostgreSQL (shared by every replica)")
        auth = auth_for(settings)
        workers = settings.worker_tls()
        ranking = RankingClient(settings.ranking_address, workers)
        resources.push_async_callback(ranking.close)
        try:
            retrieval = ShardedRetrievalClient(ShardMap.load(settings.retrieval_shard_map)
                                               if settings.retrieval_shard_map else settings.retrieval_addresses,
                                               workers)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"lmrec-gateway: invalid settings\nretrieval_shard_map: {exc}") from None
        resources.push_async_callback(retrieval.close)
        listening = create_server(settings, state.store, ranking, retrieval, metrics, state.impressions, scenarios,
                                  state.sessions, auth, state.audit)
        background = []
        if settings.reindex_interval_s:
            background.append(IndexReconciler(state.store, ranking, retrieval).run(settings.reindex_interval_s))
        if settings.retrieval_shard_map:
            background.append(retrieval.watch(settings.retrieval_shard_map, settings.shard_map_poll_s))
        return Running(listening, f"ranking {settings.ranking_address}, retrieval {retrieval.addresses}", background)

    await run_service(settings, ServiceSpec("gateway", GatewayMetrics), build)


def parse_settings(argv: list[str] | None) -> GatewaySettings:
    parser = argparse.ArgumentParser(prog="lmrec-gateway", description="lmrec gateway")
    return settings_from_flags(parser, argv, GatewaySettings)


def main(argv: list[str] | None = None) -> None:
    configure_logging("gateway")
    die_with_parent()
    asyncio.run(serve(parse_settings(argv)))


if __name__ == "__main__":
    main()
