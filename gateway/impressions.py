"""The impression log: every item each Recommend answer showed, with the propensity its policy placed it
at, for off-policy evaluation (training/ope.py) and for the user's own data (GetUserHistory, erasure).

Written behind the answer by one thread in batches (one transaction and fsync per batch, not per
request), to a SQLite file of its own so the writes never wait on, or hold up, the event store (or, with
gateway replicas, to their shared PostgreSQL database: the same statements, gateway/store/db.py). An
impression is stored within `flush_interval_s` of its answer; `close()` writes what is pending.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from gateway.store.db import SqliteDb
from lmrec.errors import LmrecError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS impressions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, user_id TEXT NOT NULL,
    item_id TEXT NOT NULL, position INTEGER NOT NULL, propensity REAL NOT NULL, policy TEXT NOT NULL,
    policy_param REAL NOT NULL, greedy_rank INTEGER NOT NULL, slate_size INTEGER NOT NULL,
    pool_size INTEGER NOT NULL, model_version TEXT NOT NULL, scenario TEXT NOT NULL, time_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS impressions_by_user ON impressions (user_id, time_ms, seq);
"""
_FIELDS = ("request_id", "user_id", "item_id", "position", "propensity", "policy", "policy_param", "greedy_rank",
           "slate_size", "pool_size", "model_version", "scenario", "time_ms")


@dataclass(frozen=True)
class Impression:
    """One shown item. `greedy_rank`: its place in the list before exploration; `slate_size` (k) and
    `pool_size` (the exploration pool) let an estimator compute what another policy would have shown."""

    request_id: str
    user_id: str
    item_id: str
    position: int
    propensity: float
    policy: str
    policy_param: float
    greedy_rank: int
    slate_size: int
    pool_size: int
    model_version: str
    scenario: str
    time_ms: int

    @property
    def propensity_kind(self) -> str:
        # Softmax logs the Plackett-Luce probability given the items above; the others, per position.
        return "conditional" if self.policy == "softmax" else "marginal"


class ImpressionLog:
    def __init__(self, db: Path | SqliteDb, flush_interval_s: float = 0.05, max_pending: int = 100_000) -> None:
        """`db`: a SQLite file's path, or an open database (gateway/store/db.py) with the schema in place.
        `max_pending`: answers queued at most; more are dropped (and counted)."""
        self._db = SqliteDb(db, _SCHEMA) if isinstance(db, (str, Path)) else db
        # Answers recorded and not yet taken; `_in_hand`: batches taken and not yet written. A flush waits
        # for those, so an erasure never misses an impression the writer holds (it would land after).
        self._cond = threading.Condition()
        self._pending: list[list[Impression]] = []
        self._in_hand = 0
        self._closed = False
        self._interval = flush_interval_s
        self._max_pending = max_pending
        self.dropped = 0
        self._writer = threading.Thread(target=self._run, name="impression-log", daemon=True)
        self._writer.start()

    def record(self, impressions: Sequence[Impression]) -> None:
        """Queues one answer's impressions; never blocks the request (a full queue drops and counts)."""
        if not impressions:
            return
        with self._cond:
            if len(self._pending) < self._max_pending:
                self._pending.append(list(impressions))
                self._cond.notify_all()
                return
            self.dropped += len(impressions)
        log.warning("impression log queue full: %d impressions dropped so far", self.dropped)

    def _take(self) -> list[Impression]:
        """Under the lock: everything queued, now in hand."""
        batch = [i for answer in self._pending for i in answer]
        self._pending = []
        self._in_hand += 1
        return batch

    def _write_taken(self, batch: list[Impression]) -> None:
        try:
            if batch:
                self._write(batch)
        finally:
            with self._cond:
                self._in_hand -= 1
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait(self._interval)
                if not self._pending:
                    return
                batch = self._take()
            try:
                self._write_taken(batch)
            except (LmrecError, sqlite3.Error) as exc:  # e.g. the database is away: keep the writer alive
                self.dropped += len(batch)
                log.warning("%d impressions not written (%s); %d dropped so far", len(batch), exc, self.dropped)

    def _write(self, batch: list[Impression]) -> None:
        rows = [tuple(getattr(i, f) for f in _FIELDS) for i in batch]
        with self._db.transaction():
            self._db.executemany(f"INSERT INTO impressions ({', '.join(_FIELDS)}) "
                                 f"VALUES ({', '.join('?' * len(_FIELDS))})", rows)

    def flush(self) -> None:
        """Writes everything recorded so far, and waits for what the writer holds (tests, erasure, export)."""
        with self._cond:
            self._cond.wait_for(lambda: self._in_hand == 0)
            batch = self._take()
        self._write_taken(batch)

    def for_user(self, user_id: str) -> list[Impression]:
        self.flush()
        rows = self._db.execute(f"SELECT {', '.join(_FIELDS)} FROM impressions WHERE user_id = ? "
                                "ORDER BY time_ms, seq", (user_id,)).fetchall()
        return [Impression(*row) for row in rows]

    def all(self, batch: int = 10_000):
        """Every impression, oldest first, in batches (export)."""
        self.flush()
        last = 0
        while True:
            rows = self._db.execute(f"SELECT seq, {', '.join(_FIELDS)} FROM impressions WHERE seq > ? "
                                    "ORDER BY seq LIMIT ?", (last, batch)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [Impression(*row[1:]) for row in rows]

    def delete_user(self, user_id: str) -> int:
        """Erases the user's impressions, those still queued included, leaving no copy in the files."""
        self.flush()
        deleted = self._db.execute("DELETE FROM impressions WHERE user_id = ?", (user_id,)).rowcount
        self._db.scrub(["impressions"])
        return deleted

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._writer.join(timeout=10)
        self.flush()
        self._db.close()


def export_log(impressions: ImpressionLog, clicks_for, out: Path) -> int:
    """Writes the impression log as JSONL for `lmrec evaluate --ope`, each row's `clicked` joined from the
    events that carry its request id (`clicks_for(request_ids) -> {(request_id, item_id)}`); returns rows."""
    written = 0
    with open(out, "w") as sink:
        for batch in impressions.all():
            clicked = clicks_for(sorted({i.request_id for i in batch}))
            for i in batch:
                row = {**asdict(i), "propensity_kind": i.propensity_kind,
                       "clicked": (i.request_id, i.item_id) in clicked}
                sink.write(json.dumps(row) + "\n")
                written += 1
    return written
