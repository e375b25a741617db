"""The audit log: one record per catalogue write and erasure (who, when, what, how many), never the erased
data.

Each record is a JSON line on the `lmrec.audit` logger at INFO, for the log pipeline, and a row in a
durable table: `<state_dir>/audit.sqlite` (synchronous=FULL), or the `audit` table of the gateway's
PostgreSQL database (gateway/store/migrations.py). It is written before the call returns, so a write the
client saw acknowledged has its record. "Who" is the calling token's name (lmrec/auth.py); an erasure
names its user only by the hash of the exclusion list (lmrec/erasure.py), which proves the erasure to
whoever already knows the id and tells nobody else anything.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.store.db import PostgresDb, SqliteDb
from lmrec.auth import current_principal

log = logging.getLogger("lmrec.audit")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, time_ms INTEGER NOT NULL, principal TEXT NOT NULL,
    action TEXT NOT NULL, count INTEGER NOT NULL, user_hash TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}');
"""
_FIELDS = ("time_ms", "principal", "action", "count", "user_hash", "detail")


@dataclass(frozen=True)
class AuditRecord:
    """`action`: the RPC (UpsertItems, DeleteItems, DeleteUserData); `count`: items written or deleted, or
    for an erasure the rows erased, split by kind in `detail`."""

    time_ms: int
    principal: str
    action: str
    count: int
    user_hash: str = ""
    detail: dict[str, int] = field(default_factory=dict)

    def json_line(self) -> str:
        when = dt.datetime.fromtimestamp(self.time_ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds")
        line = {"time": when, "principal": self.principal, "action": self.action, "count": self.count}
        if self.user_hash:
            line["user_hash"] = self.user_hash
        return json.dumps({**line, **self.detail}, sort_keys=False)


class AuditLog:
    def __init__(self, db: Path | SqliteDb | PostgresDb, clock: Callable[[], float] = time.time) -> None:
        """`db`: a SQLite file's path, or an open database (gateway/store/db.py) with the schema in place."""
        self._db = SqliteDb(db, _SCHEMA, "FULL") if isinstance(db, (str, Path)) else db
        self._clock = clock

    def record(self, action: str, count: int, user_hash: str = "", **detail: int) -> AuditRecord:
        """Stores and logs one record, by the principal of the call in progress."""
        entry = AuditRecord(int(self._clock() * 1000), current_principal(), action, count, user_hash, detail)
        self._db.execute(f"INSERT INTO audit ({', '.join(_FIELDS)}) VALUES ({', '.join('?' * len(_FIELDS))})",
                         (entry.time_ms, entry.principal, entry.action, entry.count, entry.user_hash,
                          json.dumps(entry.detail)))
        log.info("%s", entry.json_line())
        return entry

    def records(self, after_seq: int = 0, limit: int = 1000) -> list[AuditRecord]:
        """Stored records after `after_seq`, oldest first."""
        rows = self._db.execute(f"SELECT {', '.join(_FIELDS)} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
                                (after_seq, limit)).fetchall()
        return [AuditRecord(t, p, a, c, h, json.loads(d)) for t, p, a, c, h, d in rows]

    def close(self) -> None:
        self._db.close()
