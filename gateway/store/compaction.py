"""Rewrites the PostgreSQL tables that hold user data after an erasure, so that the erased rows leave the
database's files.

A DELETE leaves the tuples in their heap and index pages; plain VACUUM frees the space but leaves the
bytes in the pages' free space until something overwrites them (measured: docs/privacy.md). VACUUM
FULL writes each table and its indexes to new files and drops the old ones. It holds an ACCESS
EXCLUSIVE lock on the table while it copies, so it runs on a background thread, one rewrite for the
erasures of `delay_s`, and waits at most `lock_timeout_s` for each lock (a waiting exclusive lock would
queue every later reader behind it), retrying until it gets it.

What is left to rewrite is in the database: `erased_users` rows with `compacted` false. The rewrite
marks those it read before starting, so a replica that restarts, or any other, finishes what one left;
one replica at a time rewrites (an advisory lock).
"""

from __future__ import annotations

import logging
import threading
import time

from gateway.store.postgres_db import COMPACTION_LOCK

log = logging.getLogger(__name__)

# Every table that holds user ids (gateway/store/migrations.py); rewritten together, so a finished
# rewrite covers every erasure listed before it began.
USER_TABLES = ("events", "positive_pairs", "impressions", "sessions", "turns", "session_feedback")
MAX_RETRY_S = 30.0


class TableCompactor:
    def __init__(self, pool, delay_s: float = 2.0, lock_timeout_s: float = 1.0) -> None:
        self._pool, self._delay, self._lock_timeout_ms = pool, delay_s, int(lock_timeout_s * 1000)
        self._cond = threading.Condition()
        self._requested, self._done = 1, 0  # at start: finish what an earlier process left
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="erasure-compaction", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """An erasure committed: rewrite the user tables within `delay_s` (plus the rewrite's time)."""
        with self._cond:
            self._requested += 1
            self._cond.notify_all()

    def _run(self) -> None:
        retry_s = self._delay
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stop.is_set() or self._requested > self._done)
            if self._stop.wait(self._delay):  # the erasures of the next moments share this rewrite
                return
            with self._cond:
                target = self._requested
            try:
                finished = self.compact()
            except (NotRewritten, *_retryable()) as exc:
                finished, reason = None, str(exc)
            else:
                reason = "another replica is rewriting them"
            if finished is None:
                log.warning("erasure compaction postponed %.0f s: %s", retry_s, reason)
                if self._stop.wait(retry_s):
                    return
                retry_s = min(retry_s * 2, MAX_RETRY_S)
                continue
            retry_s = self._delay
            with self._cond:
                self._done = target
                self._cond.notify_all()

    def compact(self) -> int | None:
        """Rewrites the user tables if an erasure awaits it; returns the erasures it finished, or None when
        another replica holds the rewrite (what it read may not include the latest erasures: try later)."""
        with self._pool.connection() as conn:
            if not conn.execute("SELECT pg_try_advisory_lock(%s)", (COMPACTION_LOCK,)).fetchone()[0]:
                return None
            try:
                return self._compact(conn)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (COMPACTION_LOCK,))

    def _compact(self, conn) -> int:
        pending = conn.execute("SELECT user_hash, erased_at FROM erased_users WHERE NOT compacted").fetchall()
        if not pending:
            return 0
        started = time.perf_counter()
        before = _files(conn)
        conn.execute(f"SET lock_timeout = {self._lock_timeout_ms}")
        try:
            for table in USER_TABLES:
                conn.execute(f"VACUUM (FULL) {table}")
        finally:
            conn.execute("RESET lock_timeout")
        # A VACUUM FULL by a role that does not own the table only warns, and rewrites nothing.
        after = _files(conn)
        same = [t for t in USER_TABLES if before.get(t) == after.get(t)]
        if same:
            raise NotRewritten(f"{', '.join(same)} not rewritten: the gateway's database role must own them")
        # Only the erasures read above: one of the same user made since is not covered by this rewrite.
        conn.execute("UPDATE erased_users e SET compacted = TRUE FROM unnest(%s::text[], %s::timestamptz[]) "
                     "AS p (user_hash, erased_at) WHERE e.user_hash = p.user_hash AND e.erased_at = p.erased_at",
                     ([h for h, _ in pending], [t for _, t in pending]))
        log.info("rewrote the user tables for %d erasures in %.2f s", len(pending), time.perf_counter() - started)
        return len(pending)

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=10)


class NotRewritten(RuntimeError):
    pass


def _files(conn) -> dict[str, int]:
    """The data file of each user table: a rewrite gives it a new one."""
    return dict(conn.execute("SELECT relname, relfilenode FROM pg_class WHERE relname = ANY(%s) "
                             "AND relnamespace = current_schema()::regnamespace", (list(USER_TABLES),)).fetchall())


def _retryable() -> tuple[type[BaseException], ...]:
    import psycopg
    from psycopg_pool import PoolTimeout

    # LockNotAvailable (lock_timeout) is an OperationalError, like a lost connection.
    return psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout
