"""The gateway's durable state in one local SQLite file (the embedded default, one gateway process):
catalogue metadata, users' interaction events, item popularity.

SQLite in WAL mode with synchronous=FULL: a write is on disk when the call that made it returns, so an
acknowledged event or item survives a crash. Catalogue titles/attributes and popularity counts are
mirrored in memory because every request reads them. Popularity counts the users with a positive event
on an item (gateway/policy/feedback.py says which events are negative).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from gateway.policy.feedback import negative_sql
from gateway.store.db import ErasureUnfinished
from gateway.store.mirror import Mirror, Mirrored
from gateway.store.model import Event
from lmrec.catalog import CatalogItem
from lmrec.erasure import append_erased, user_hash
from lmrec.sqlite_db import checkpoint_truncate, open_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY, title TEXT NOT NULL, text TEXT NOT NULL, attributes TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, item_id TEXT NOT NULL,
    event_type INTEGER NOT NULL, value REAL NOT NULL, ts_ms INTEGER NOT NULL, scenario TEXT NOT NULL,
    request_id TEXT NOT NULL DEFAULT '');
-- Serves every by-user read and covers the feedback each Recommend reads, so that read never touches the
-- table. It replaced events_items_by_user (its prefix), which only cost writes.
CREATE INDEX IF NOT EXISTS events_feedback_by_user ON events (user_id, ts_ms, seq, item_id, event_type, value);
DROP INDEX IF EXISTS events_by_user;
DROP INDEX IF EXISTS events_items_by_user;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class GatewayStore(Mirrored):
    def __init__(self, path: Path, negative_rating_below: float = 3.0, erased_list: Path | None = None) -> None:
        """`erased_list`: where erasures list their users (lmrec/erasure.py); default erased-users.txt
        beside `path`."""
        self._db = open_wal(path, _SCHEMA, "FULL")
        self._erased_list = erased_list or Path(path).with_name("erased-users.txt")
        if "request_id" not in {row[1] for row in self._db.execute("PRAGMA table_info(events)")}:
            self._db.execute("ALTER TABLE events ADD COLUMN request_id TEXT NOT NULL DEFAULT ''")
        # Joins clicks to logged impressions (off-policy evaluation); only events that carry a request id.
        self._db.execute("CREATE INDEX IF NOT EXISTS events_by_request ON events (request_id) WHERE request_id != ''")
        self._lock = threading.Lock()
        negative, self._negative_args = negative_sql(negative_rating_below)
        self._positive = f"NOT {negative}"
        self._mirror = Mirror()
        self._versions = itertools.count(1)  # this process is the only writer: a local clock orders changes
        self._mirror.apply_items((CatalogItem(item_id, title, text, json.loads(attrs)), 0) for item_id, title, text, attrs
                                 in self._db.execute("SELECT item_id, title, text, attributes FROM items"))
        self._mirror.set_counts((item_id, users, 0) for item_id, users in self._db.execute(
            f"SELECT item_id, COUNT(DISTINCT user_id) FROM events WHERE {self._positive} GROUP BY item_id",
            self._negative_args))

    # Catalogue ---------------------------------------------------------------------------------
    def upsert_items(self, items: Sequence[CatalogItem]) -> None:
        rows = [(i.item_id, i.title, i.text, json.dumps(i.attributes)) for i in items]
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO items VALUES (?, ?, ?, ?) ON CONFLICT(item_id) DO UPDATE SET "
                "title=excluded.title, text=excluded.text, attributes=excluded.attributes", rows)
            version = next(self._versions)
            self._mirror.apply_items((item, version) for item in items)

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def delete_items(self, item_ids: Sequence[str]) -> int:
        with self._lock, self._db:
            self._db.executemany("DELETE FROM items WHERE item_id = ?", [(i,) for i in item_ids])
            version = next(self._versions)
            return self._mirror.apply_items(deleted=((i, version) for i in set(item_ids)))

    # Events ------------------------------------------------------------------------------------
    def record_events(self, events: Sequence[Event]) -> None:
        rows = [(e.user_id, e.item_id, e.event_type, e.value, e.timestamp_ms, e.scenario, e.request_id)
                for e in events]
        with self._lock:
            users = {e.user_id for e in events}
            before = self._positive_pairs(users)
            with self._db:
                self._db.executemany(
                    "INSERT INTO events (user_id, item_id, event_type, value, ts_ms, scenario, request_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self._mirror.add_counts(Counter(item_id for _, item_id in self._positive_pairs(users) - before))

    def _positive_pairs(self, users: Iterable[str]) -> set[tuple[str, str]]:
        """(user, item) pairs with at least one positive event."""
        pairs = set()
        for user_id in users:
            pairs |= {(user_id, i) for (i,) in self._db.execute(
                f"SELECT DISTINCT item_id FROM events WHERE user_id = ? AND {self._positive}",
                (user_id, *self._negative_args))}
        return pairs

    def history(self, user_id: str) -> list[Event]:
        """The user's events, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT user_id, item_id, event_type, value, ts_ms, scenario, request_id FROM events "
                "WHERE user_id = ? ORDER BY ts_ms, seq", (user_id,)).fetchall()
        return [Event(*row) for row in rows]

    def feedback(self, user_id: str) -> list[tuple[str, int, float]]:
        """(item_id, event_type, value) of the user's events, oldest first: what Recommend reads, from the
        covering index alone (whole events cost ~2x)."""
        with self._lock:
            return self._db.execute(
                "SELECT item_id, event_type, value FROM events INDEXED BY events_feedback_by_user "
                "WHERE user_id = ? ORDER BY ts_ms, seq", (user_id,)).fetchall()

    def clicks_for(self, request_ids: Sequence[str]) -> set[tuple[str, str]]:
        """(request_id, item_id) pairs with a positive event joined to that request: the rewards of logged
        impressions."""
        found: set[tuple[str, str]] = set()
        with self._lock:
            for start in range(0, len(request_ids), 500):
                chunk = list(request_ids[start:start + 500])
                found |= set(self._db.execute(
                    f"SELECT request_id, item_id FROM events WHERE request_id IN ({','.join('?' * len(chunk))}) "
                    f"AND {self._positive}", (*chunk, *self._negative_args)))
        return found

    def delete_user(self, user_id: str) -> int:
        """Erases the user's events, leaving no copy in the file or its WAL, after listing the user for
        exclusion from training (listed first: a crash in between leaves a listed user, not an unlisted one)."""
        append_erased(self._erased_list, [user_hash(user_id)])
        with self._lock:
            items = [i for (i,) in self._db.execute(
                f"SELECT DISTINCT item_id FROM events WHERE user_id = ? AND {self._positive}",
                (user_id, *self._negative_args))]
            with self._db:
                deleted = self._db.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
            self._mirror.add_counts({item_id: -1 for item_id in items})
            if not checkpoint_truncate(self._db):
                raise ErasureUnfinished("events")
            return deleted

    def event_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def close(self) -> None:
        self._db.close()
