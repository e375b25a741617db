"""The gateway's durable state, on one of two engines chosen by settings:

* embedded SQLite files under `state_dir` (the default, what `make run` uses): one gateway process;
* PostgreSQL at `database_url`: any number of gateway replicas share users' events, the catalogue,
  popularity, impressions and conversation sessions (schema migrations in gateway/store/migrations.py).

Either way it includes the audit log (gateway/audit.py) and the list of erased users (lmrec/erasure.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.store.model import Event, now_ms
from gateway.store.sqlite import GatewayStore

if TYPE_CHECKING:
    from gateway.audit import AuditLog
    from gateway.conversation.sessions import SessionStore
    from gateway.impressions import ImpressionLog
    from gateway.settings import GatewaySettings
    from gateway.store.compaction import TableCompactor
    from gateway.store.postgres import PostgresStore

__all__ = ["Event", "GatewayStore", "State", "now_ms", "open_state"]


@dataclass
class State:
    store: GatewayStore | PostgresStore
    impressions: ImpressionLog
    sessions: SessionStore
    audit: AuditLog
    engine: str
    _pool: object = None
    _compactor: TableCompactor | None = None

    def close(self) -> None:
        self.impressions.close()
        self.sessions.close()
        self.audit.close()
        self.store.close()
        if self._compactor is not None:
            self._compactor.close()
        if self._pool is not None:
            self._pool.close()


def open_state(settings: GatewaySettings) -> State:
    from gateway.audit import AuditLog
    from gateway.conversation.sessions import SessionStore
    from gateway.impressions import ImpressionLog

    def sessions(db) -> SessionStore:
        return SessionStore(db, settings.session_ttl_s, settings.session_max_turns)

    if settings.database_url is None:
        state = Path(settings.state_dir)
        return State(GatewayStore(state / "gateway.sqlite", settings.negative_rating_below,
                                  state / "erased-users.txt"),
                     ImpressionLog(state / "impressions.sqlite", settings.impression_flush_s),
                     sessions(state / "sessions.sqlite"), AuditLog(state / "audit.sqlite"), "sqlite")
    from gateway.store.compaction import TableCompactor
    from gateway.store.db import PostgresDb
    from gateway.store.postgres import PostgresStore
    from gateway.store.postgres_db import open_pool

    pool = open_pool(settings.database_url.get_secret_value(), settings.database_pool_size,
                     settings.database_timeout_s)
    compactor = TableCompactor(pool, settings.erasure_compaction_delay_s, settings.erasure_lock_timeout_s)
    return State(PostgresStore(pool, settings.negative_rating_below, settings.state_sync_s, compactor),
                 ImpressionLog(PostgresDb(pool, "impressions"), settings.impression_flush_s),
                 sessions(PostgresDb(pool, "sessions")), AuditLog(PostgresDb(pool, "audit")), "postgresql", pool,
                 compactor)
