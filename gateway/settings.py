"""Typed settings of the gateway; a wrong value stops the process at start, naming the field."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LMREC_GATEWAY_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    ranking_address: str = "127.0.0.1:50052"
    # One address per retrieval shard, in shard order (comma-separated in the environment).
    retrieval_addresses: Annotated[list[str], NoDecode] = ["127.0.0.1:50053"]
    # A shard map file (`lmrec reshard --shard-map`): when set, the retrieval shards are its addresses
    # (retrieval_addresses is ignored), and a map with a higher epoch is switched to within
    # shard_map_poll_s, while serving.
    retrieval_shard_map: Path | None = None
    shard_map_poll_s: float = Field(1.0, gt=0, le=60)
    state_dir: Path = Path("var/gateway")
    # Where the state lives. Unset: SQLite files under state_dir (one gateway process). A PostgreSQL URL
    # (postgresql://user:password@host:port/db): state shared by any number of gateway replicas.
    database_url: SecretStr | None = None
    database_pool_size: int = Field(8, ge=1, le=1000)
    # How long a database call waits for a connection before it fails: a write with UNAVAILABLE (nothing
    # acknowledged), Recommend by answering without the stored feedback (degraded).
    database_timeout_s: float = Field(2.0, gt=0, le=60)
    # With PostgreSQL: how often a replica reads catalogue and popularity changes made through the
    # others; a change reaches every replica within this plus one query.
    state_sync_s: float = Field(0.2, gt=0, le=60)
    # Budget for requests that arrive without a deadline.
    default_deadline_ms: float = Field(1000.0, gt=0)
    num_candidates: int = Field(200, ge=1, le=10_000)
    # Most recent history items that form the user context.
    history_window: int = Field(200, ge=1, le=5000)
    # Time kept back from downstream calls for assembling the answer.
    reserve_ms: float = Field(5.0, ge=0)
    grace_seconds: float = Field(5.0, ge=0)
    # How often to check that the retrieval index holds the served model's vectors (re-index on a
    # model change, see gateway/reindex.py); 0 = never.
    reindex_interval_s: float = Field(5.0, ge=0)
    # A RATING event below this value is a negative signal, like DISMISS (gateway/policy/feedback.py).
    negative_rating_below: float = 3.0
    # Per-scenario policies (TOML, gateway/policy/scenarios.py), re-read when the file changes; unset:
    # every scenario gets the built-in default policy.
    scenarios_file: Path | None = None
    # Conversation sessions (RecommendRequest.session_id, gateway/conversation/sessions.py): a session
    # expires this long after its last turn or feedback, and keeps its newest session_max_turns turns.
    session_ttl_s: float = Field(3600.0, gt=0)
    session_max_turns: int = Field(20, ge=1, le=1000)
    # Impressions reach disk this long after their answer at most (gateway/impressions.py).
    impression_flush_s: float = Field(0.05, gt=0, le=10)
    # Recommend calls this process works on at once; more are refused at once with RESOURCE_EXHAUSTED
    # (lmrec/grpc_server.AdmissionInterceptor) rather than queued into their deadlines. 0 = no limit.
    max_in_flight_recommends: int = Field(64, ge=0, le=100_000)
    # Prometheus exposition at http://host:metrics_port/metrics; 0 = off.
    metrics_port: int = Field(0, ge=0, le=65535)
    # Written (atomically) with the bound port once serving; lets a supervisor use port 0.
    port_file: Path | None = None

    @field_validator("retrieval_addresses", mode="before")
    @classmethod
    def _split(cls, value):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not value:
            raise ValueError("at least one retrieval shard address is required")
        return value

    @field_validator("database_url", mode="after")
    @classmethod
    def _postgres_url(cls, value):
        if value is not None and not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value
