"""The one way the gateway reaches PostgreSQL: a connection pool, the schema migrated at start, and
database failures turned into UNAVAILABLE for the client."""

from __future__ import annotations

import contextlib
import logging

from gateway.store.migrations import MIGRATIONS
from lmrec.errors import DependencyUnavailable

log = logging.getLogger(__name__)

# Advisory lock keys (any 64-bit numbers that no other tenant of the database uses).
MIGRATION_LOCK = 0x6C6D7265_63000001
CHANGE_LOCK = 0x6C6D7265_63000002
COMPACTION_LOCK = 0x6C6D7265_63000003  # one replica at a time rewrites the user tables after erasures


# After a database outage the pool retries with growing delays; giving up after this long lets the next
# call start a fresh attempt at once, so recovery takes seconds, not the backoff's minutes.
RECONNECT_GIVE_UP_S = 5.0


def open_pool(url: str, size: int, timeout_s: float = 2.0, start_timeout_s: float = 30.0):
    """A pool of autocommit connections to `url` with every migration applied. A call waits `timeout_s`
    for a connection, then fails (UNAVAILABLE). Raises SystemExit naming the setting when the database
    cannot be reached within `start_timeout_s` at start."""
    import psycopg
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(url, min_size=1, max_size=size, open=False, timeout=timeout_s,
                          kwargs={"autocommit": True, "connect_timeout": max(1, round(timeout_s))},
                          reconnect_timeout=RECONNECT_GIVE_UP_S, check=ConnectionPool.check_connection,
                          name="lmrec-gateway")
    try:
        pool.open(wait=True, timeout=start_timeout_s)
        migrate(pool)
    except (psycopg.Error, TimeoutError) as exc:
        pool.close()
        raise SystemExit(f"lmrec-gateway: invalid settings\ndatabase_url: cannot use the database ({exc})") from None
    return pool


def migrate(pool) -> list[int]:
    """Applies the migrations this database has not seen, in order, under one lock; returns them."""
    applied = []
    with pool.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                     "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            conn.execute(sql)
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied.append(version)
    if applied:
        log.info("database migrated: %s", ", ".join(map(str, applied)))
    return applied


@contextlib.contextmanager
def database_call(what: str):
    """Lets a lost or refused database reach the client as UNAVAILABLE (retryable), naming the step."""
    import psycopg
    from psycopg_pool import PoolTimeout

    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
        raise DependencyUnavailable(f"state store unavailable ({what}): {type(exc).__name__}") from None
