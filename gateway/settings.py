"""Typed settings of the gateway; a wrong value stops the process at start, naming the field."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from lmrec.service_settings import GATEWAY_PORT, RANKING_PORT, RETRIEVAL_PORT, ServingSettings, metrics_port_field, port_field
from lmrec.tls import ClientTls


class GatewaySettings(ServingSettings, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LMREC_GATEWAY_", extra="forbid")

    port: int = port_field(GATEWAY_PORT)
    ranking_address: str = f"127.0.0.1:{RANKING_PORT}"
    # One address per retrieval shard, in shard order (comma-separated in the environment).
    retrieval_addresses: Annotated[list[str], NoDecode] = Field(
        [f"127.0.0.1:{RETRIEVAL_PORT}"], description="comma-separated, one per shard in shard order")
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
    # With PostgreSQL, after an erasure: the user tables are rewritten (VACUUM FULL, gateway/store/
    # compaction.py) so no deleted tuple keeps the user's data; erasures within this delay share one rewrite,
    # and each table lock is waited for at most erasure_lock_timeout_s before a retry (requests wait meanwhile).
    erasure_compaction_delay_s: float = Field(2.0, ge=0, le=3600)
    erasure_lock_timeout_s: float = Field(1.0, gt=0, le=60)
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
    # How often to check that the retrieval index holds the served model's vectors (re-index on a
    # model change, see gateway/reindex.py); 0 = never.
    reindex_interval_s: float = Field(5.0, ge=0)
    # A RATING event below this value is a negative signal, like DISMISS (gateway/policy/feedback.py).
    negative_rating_below: float = 3.0
    # Per-scenario policies (TOML, gateway/policy/scenarios.py), re-read when the file changes; unset:
    # every scenario gets the built-in default policy.
    scenarios_file: Path | None = Field(None, description="per-scenario policies (TOML), re-read on change")
    # Conversation sessions (RecommendRequest.session_id, gateway/conversation/sessions.py): a session
    # expires this long after its last turn or feedback, and keeps its newest session_max_turns turns.
    session_ttl_s: float = Field(3600.0, gt=0, description="a conversation session expires this long after its last turn")
    session_max_turns: int = Field(20, ge=1, le=1000, description="turns a session keeps (the oldest are dropped)")
    # Impressions reach disk this long after their answer at most (gateway/impressions.py).
    impression_flush_s: float = Field(0.05, gt=0, le=10)
    # Recommend calls this process works on at once; more are refused at once with RESOURCE_EXHAUSTED
    # (lmrec/grpc_server.AdmissionInterceptor) rather than queued into their deadlines. 0 = no limit.
    max_in_flight_recommends: int = Field(64, ge=0, le=100_000)
    # Under that ceiling the limit adapts (lmrec/admission.py): it shrinks (never below 8) while the median
    # Recommend latency exceeds this many times the no-load latency, and grows back when it does not.
    # 0 = the fixed ceiling.
    admission_latency_tolerance: float = Field(3.0, ge=0, le=100)
    # Bearer tokens with roles (lmrec/auth.py): a token file (re-read on change) and/or inline lines
    # ("name role sha256:<hex>", ';'-separated, e.g. from a secret). With neither, the gateway makes an admin
    # token in <state_dir>/tokens/admin.token (0600) and says where at start. auth_disabled turns checks
    # off (logged as a warning at start): every caller may then do everything.
    auth_tokens_file: Path | None = None
    auth_tokens: SecretStr | None = None
    auth_disabled: bool = False
    # Calls per second each token may make (token bucket with this burst); beyond it RESOURCE_EXHAUSTED
    # with the time to wait (google.rpc.RetryInfo). 0 = no limit.
    rate_limit_per_s: float = Field(0.0, ge=0)
    rate_limit_burst: float = Field(50.0, ge=1)
    # TLS to the ranking and retrieval workers: the CA that signed their certificates, and for mTLS this
    # gateway's client certificate and key. Unset: plaintext.
    worker_tls_ca_file: Path | None = None
    worker_tls_cert_file: Path | None = None
    worker_tls_key_file: Path | None = None
    # Prometheus exposition at http://host:metrics_port/metrics (README "Observability").
    metrics_port: int = metrics_port_field(9091)

    def worker_tls(self) -> ClientTls:
        return ClientTls(self.worker_tls_ca_file, self.worker_tls_cert_file, self.worker_tls_key_file)

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
