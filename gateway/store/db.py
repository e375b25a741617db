"""One small SQL interface over both engines, for the stores whose SQL is portable (impressions,
conversation sessions): `?` placeholders, results fetched eagerly, `transaction()` for what must commit
together, `scrub()` after an erasure. The event store has an implementation per engine
(gateway/store/sqlite.py, postgres.py)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.store.postgres_db import database_call
from lmrec.errors import DependencyUnavailable
from lmrec.sqlite_db import checkpoint_truncate, open_wal


@dataclass(frozen=True)
class Result:
    rows: list[tuple]
    rowcount: int

    def fetchall(self) -> list[tuple]:
        return self.rows

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None

    def __iter__(self):
        return iter(self.rows)


class SqliteDb:
    """A local SQLite file in WAL mode (lmrec/sqlite_db.py), one connection behind a lock."""

    def __init__(self, path: Path, schema: str, synchronous: str = "NORMAL") -> None:
        self._conn = open_wal(path, schema, synchronous)
        self._lock = threading.RLock()

    def execute(self, sql: str, params: Sequence = ()) -> Result:
        with self._lock:
            cur = self._conn.execute(sql, params)
            return Result(cur.fetchall(), cur.rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        with self._lock:
            self._conn.executemany(sql, rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SqliteDb]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def scrub(self, tables: Iterable[str]) -> None:
        """After deletions: no copy of the deleted rows left in the file or its WAL (secure_delete zeroed
        them in the pages; the WAL still holds the pages as they were until this checkpoint)."""
        with self._lock:
            scrubbed = checkpoint_truncate(self._conn)
        if not scrubbed:
            raise ErasureUnfinished(", ".join(tables))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class ErasureUnfinished(DependencyUnavailable):
    """A committed deletion whose old copy a reader kept in the WAL: retryable, and a retry finishes it."""

    def __init__(self, what: str) -> None:
        super().__init__(f"the deletion from {what} is committed, but a reader kept its old copy in the SQLite "
                         "WAL from being truncated; call again to finish the erasure")


class PostgresDb:
    """Statements on a pooled PostgreSQL connection (gateway/store/postgres_db.py); `?` becomes `%s`."""

    def __init__(self, pool, what: str) -> None:
        self._pool, self._what = pool, what
        self._local = threading.local()

    def execute(self, sql: str, params: Sequence = ()) -> Result:
        with self._connection() as conn:
            cur = conn.execute(sql.replace("?", "%s"), params)
            return Result(cur.fetchall() if cur.description else [], cur.rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        with self._connection() as conn, conn.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PostgresDb]:
        with self._connection() as conn, conn.transaction():
            self._local.conn = conn
            try:
                yield self
            finally:
                self._local.conn = None

    @contextlib.contextmanager
    def _connection(self):
        conn = getattr(self._local, "conn", None)
        with database_call(self._what):
            if conn is not None:  # inside this thread's transaction
                yield conn
                return
            with self._pool.connection() as conn:
                yield conn

    def scrub(self, tables: Iterable[str]) -> None:
        """Nothing here: the event store's erasure, which comes last, has every user table rewritten
        (gateway/store/compaction.py), these included."""

    def close(self) -> None:
        pass  # the pool belongs to whoever opened it
