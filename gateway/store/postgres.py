"""The gateway's state in PostgreSQL, shared by any number of gateway replicas: catalogue metadata,
users' events, item popularity and the small metadata table, with the same interface as the embedded
SQLite store (gateway/store/sqlite.py).

A write returns only after its transaction committed, so an acknowledged event or item survives the
replica that took it. Events are read from the database on every Recommend, so feedback written through
one replica shapes the next answer of any other. The catalogue and popularity counts every request reads
are mirrored in memory (gateway/store/mirror.py) and kept current by `sync()`, which a background thread
runs every `sync_interval_s`: another replica's catalogue change reaches this one within that interval
plus one query. Changes are ordered by one sequence drawn under an advisory lock held to commit, so the
sync never skips a change that commits late.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.policy.feedback import is_negative
from gateway.store.mirror import Mirror, Mirrored
from gateway.store.model import Event
from gateway.store.postgres_db import CHANGE_LOCK, database_call
from lmrec.catalog import CatalogItem
from lmrec.erasure import user_hash

if TYPE_CHECKING:
    from gateway.store.compaction import TableCompactor

log = logging.getLogger(__name__)


class PostgresStore(Mirrored):
    def __init__(self, pool, negative_rating_below: float = 3.0, sync_interval_s: float = 0.2,
                 compactor: TableCompactor | None = None) -> None:
        """`compactor`: rewrites the user tables after an erasure; without one, deleted tuples stay in the
        data files until an operator's VACUUM FULL."""
        self._pool = pool
        self._compactor = compactor
        self._negative_rating_below = negative_rating_below
        self._mirror = Mirror()
        self._seen_version = 0
        self._sync_lock = threading.Lock()
        self.sync()
        self._stop = threading.Event()
        self._interval = sync_interval_s
        self._syncer = threading.Thread(target=self._sync_forever, name="state-sync", daemon=True)
        self._syncer.start()

    # Replica sync ------------------------------------------------------------------------------
    def sync(self) -> int:
        """Reads every catalogue and popularity change since the last sync; returns how many."""
        with self._sync_lock, database_call("sync"), self._pool.connection() as conn:
            # The lock makes the high-water mark safe: no change below it can still be uncommitted.
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (CHANGE_LOCK,))
                since = self._seen_version
                items = conn.execute("SELECT item_id, title, text, attributes, deleted, version FROM items "
                                     "WHERE version > %s ORDER BY version", (since,)).fetchall()
                counts = conn.execute("SELECT item_id, users, version FROM popularity WHERE version > %s",
                                      (since,)).fetchall()
        self._mirror.apply_items(
            upserted=[(CatalogItem(i, title, text, attrs), v) for i, title, text, attrs, deleted, v in items
                      if not deleted],
            deleted=[(i, v) for i, _, _, _, deleted, v in items if deleted])
        self._mirror.set_counts(counts)
        self._seen_version = max([since] + [row[-1] for row in items] + [row[-1] for row in counts])
        return len(items) + len(counts)

    def _sync_forever(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - the next round retries; requests report the outage
                log.warning("state sync failed: %s", exc)

    # Catalogue ---------------------------------------------------------------------------------
    def upsert_items(self, items: Sequence[CatalogItem]) -> None:
        columns = ([i.item_id for i in items], [i.title for i in items], [i.text for i in items],
                   [json.dumps(i.attributes) for i in items])
        with database_call("upsert items"), self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHANGE_LOCK,))
            versions = dict(conn.execute(
                "INSERT INTO items (item_id, title, text, attributes, deleted, version) "
                "SELECT item_id, title, text, attributes::jsonb, FALSE, nextval('change_version') "
                "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) AS r (item_id, title, text, attributes) "
                "ON CONFLICT (item_id) DO UPDATE SET title = excluded.title, text = excluded.text, "
                "attributes = excluded.attributes, deleted = FALSE, version = excluded.version "
                "RETURNING item_id, version", columns).fetchall())
        self._mirror.apply_items((item, versions[item.item_id]) for item in items)

    def delete_items(self, item_ids: Sequence[str]) -> int:
        with database_call("delete items"), self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHANGE_LOCK,))
            # A tombstone, so other replicas' sync sees the deletion; the text goes at once.
            gone = conn.execute(
                "UPDATE items SET deleted = TRUE, title = '', text = '', attributes = '{}', "
                "version = nextval('change_version') WHERE item_id = ANY(%s) AND NOT deleted RETURNING item_id, version",
                (list(item_ids),)).fetchall()
        self._mirror.apply_items(deleted=gone)
        return len(gone)

    def get_meta(self, key: str) -> str | None:
        with database_call("read meta"), self._pool.connection() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with database_call("write meta"), self._pool.connection() as conn:
            conn.execute("INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                         (key, value))

    # Events ------------------------------------------------------------------------------------
    def record_events(self, events: Sequence[Event]) -> None:
        rows = [(e.user_id, e.item_id, e.event_type, e.value, e.timestamp_ms, e.scenario, e.request_id)
                for e in events]
        positive = sorted({(e.user_id, e.item_id) for e in events
                           if not is_negative(e.event_type, e.value, self._negative_rating_below)})
        counts = []
        with database_call("record events"), self._pool.connection() as conn, conn.transaction():
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO events (user_id, item_id, event_type, value, ts_ms, scenario, request_id) "
                                "VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)
            if positive:
                new = [item for (item,) in conn.execute(
                    "INSERT INTO positive_pairs SELECT * FROM unnest(%s::text[], %s::text[]) "
                    "ON CONFLICT DO NOTHING RETURNING item_id", ([u for u, _ in positive], [i for _, i in positive]))]
                if new:
                    counts = self._bump(conn, Counter(new))
        self._mirror.set_counts(counts)

    @staticmethod
    def _bump(conn, deltas: Counter[str]) -> list[tuple[str, int, int]]:
        """Adds `deltas` to the items' popularity rows; returns the new (item, users, version)."""
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHANGE_LOCK,))
        items = sorted(deltas)
        return conn.execute(
            "INSERT INTO popularity (item_id, users, version) SELECT item_id, delta, nextval('change_version') "
            "FROM unnest(%s::text[], %s::bigint[]) AS d (item_id, delta) ON CONFLICT (item_id) DO UPDATE SET "
            "users = popularity.users + excluded.users, version = excluded.version RETURNING item_id, users, version",
            (items, [deltas[i] for i in items])).fetchall()

    def history(self, user_id: str) -> list[Event]:
        """The user's events, oldest first."""
        with database_call("read history"), self._pool.connection() as conn:
            rows = conn.execute("SELECT user_id, item_id, event_type, value, ts_ms, scenario, request_id FROM events "
                                "WHERE user_id = %s ORDER BY ts_ms, seq", (user_id,)).fetchall()
        return [Event(*row) for row in rows]

    def feedback(self, user_id: str) -> list[tuple[str, int, float]]:
        """(item_id, event_type, value) of the user's events, oldest first (an index-only scan)."""
        with database_call("read feedback"), self._pool.connection() as conn:
            return conn.execute("SELECT item_id, event_type, value FROM events WHERE user_id = %s ORDER BY ts_ms, seq",
                                (user_id,)).fetchall()

    def clicks_for(self, request_ids: Sequence[str]) -> set[tuple[str, str]]:
        """(request_id, item_id) pairs with a positive event joined to that request."""
        with database_call("read clicks"), self._pool.connection() as conn:
            rows = conn.execute("SELECT request_id, item_id, event_type, value FROM events "
                                "WHERE request_id = ANY(%s)", (list(request_ids),)).fetchall()
        return {(r, i) for r, i, kind, value in rows if not is_negative(kind, value, self._negative_rating_below)}

    def delete_user(self, user_id: str) -> int:
        """Erases the user's events and lists the user for exclusion from training, in one transaction;
        then has the user tables rewritten (gateway/store/compaction.py), as the deleted tuples' bytes stay
        in the data files until then."""
        counts = []
        with database_call("delete user"), self._pool.connection() as conn, conn.transaction():
            conn.execute("INSERT INTO erased_users (user_hash, erased_at) VALUES (%s, now()) ON CONFLICT (user_hash) "
                         "DO UPDATE SET erased_at = excluded.erased_at, compacted = FALSE", (user_hash(user_id),))
            deleted = conn.execute("DELETE FROM events WHERE user_id = %s", (user_id,)).rowcount
            items = [i for (i,) in conn.execute("DELETE FROM positive_pairs WHERE user_id = %s RETURNING item_id",
                                                (user_id,))]
            if items:
                counts = self._bump(conn, Counter({i: -1 for i in items}))
        self._mirror.set_counts(counts)
        if self._compactor is not None:
            self._compactor.request()
        return deleted

    def event_count(self) -> int:
        with database_call("count events"), self._pool.connection() as conn:
            return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def close(self) -> None:
        self._stop.set()
        self._syncer.join(timeout=5)
