"""The durable store of conversation sessions: each turn as read, the items it showed, and the items
accepted or rejected in the session.

A session is keyed by (user_id, session_id), so one user never reads another's. It expires `ttl_s` after
its last turn or feedback (an expired session reads as a new one and is erased), and keeps its newest
`max_turns` turns (older ones are dropped, with what they said) and newest MAX_FEEDBACK feedback items.
Embedded: SQLite in WAL mode, in a file of its own beside the gateway's event store; synchronous=NORMAL: a
turn survives a crash of the process (not of the machine, where losing it costs the user one sentence).
Shared by gateway replicas: the same statements on PostgreSQL (gateway/store/db.py), so a conversation
may move from one replica to another between turns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.conversation.critique import ParsedTurn
from gateway.store.db import SqliteDb

MAX_FEEDBACK = 200
# How often expired sessions are erased in bulk (each read also erases the one it finds expired).
PURGE_INTERVAL_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    user_id TEXT NOT NULL, session_id TEXT NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
    next_turn INTEGER NOT NULL, PRIMARY KEY (user_id, session_id));
CREATE INDEX IF NOT EXISTS sessions_by_age ON sessions (updated_ms);
CREATE TABLE IF NOT EXISTS turns (
    user_id TEXT NOT NULL, session_id TEXT NOT NULL, turn INTEGER NOT NULL, request_id TEXT NOT NULL,
    parsed TEXT NOT NULL, shown TEXT NOT NULL, time_ms INTEGER NOT NULL, PRIMARY KEY (user_id, session_id, turn));
CREATE TABLE IF NOT EXISTS session_feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
    item_id TEXT NOT NULL, positive INTEGER NOT NULL, time_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS session_feedback_by_session ON session_feedback (user_id, session_id, seq);
"""


@dataclass(frozen=True)
class StoredTurn:
    number: int
    request_id: str
    parsed: ParsedTurn
    shown: tuple[str, ...]
    time_ms: int


@dataclass(frozen=True)
class Session:
    """A session as read: its kept turns (oldest first), its feedback (item, accepted?) oldest first, and
    the number the next turn gets."""

    user_id: str
    session_id: str
    turns: tuple[StoredTurn, ...] = ()
    feedback: tuple[tuple[str, bool], ...] = ()
    next_turn: int = 1


class SessionStore:
    def __init__(self, db: Path | SqliteDb, ttl_s: float, max_turns: int, clock: Callable[[], float] = time.time) -> None:
        """`db`: a SQLite file's path, or an open database (gateway/store/db.py) with the schema in place."""
        self._db = SqliteDb(db, _SCHEMA) if isinstance(db, (str, Path)) else db
        self.ttl_ms = int(ttl_s * 1000)
        self.max_turns = max_turns
        self._clock = clock
        self._purged_at = 0.0

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def load(self, user_id: str, session_id: str) -> Session:
        """The session, or an empty one (next turn 1) when it is unknown or has expired."""
        with self._db.transaction():
            row = self._db.execute("SELECT updated_ms, next_turn FROM sessions WHERE user_id = ? AND session_id = ?",
                                   (user_id, session_id)).fetchone()
            if row is None:
                return Session(user_id, session_id)
            if row[0] < self._now_ms() - self.ttl_ms:
                self._erase(user_id, session_id)
                return Session(user_id, session_id)
            turns = tuple(StoredTurn(n, rid, ParsedTurn.from_dict(json.loads(parsed)), tuple(json.loads(shown)), t)
                          for n, rid, parsed, shown, t in self._db.execute(
                              "SELECT turn, request_id, parsed, shown, time_ms FROM turns WHERE user_id = ? AND "
                              "session_id = ? ORDER BY turn", (user_id, session_id)))
            feedback = tuple((item, bool(positive)) for item, positive in self._db.execute(
                "SELECT item_id, positive FROM session_feedback WHERE user_id = ? AND session_id = ? ORDER BY seq",
                (user_id, session_id)))
        return Session(user_id, session_id, turns, feedback, row[1])

    def save_turn(self, user_id: str, session_id: str, turn: StoredTurn) -> None:
        """Writes a turn (replacing one of the same number: a retried request), drops turns beyond
        `max_turns`, and restarts the session's time to live."""
        now = self._now_ms()
        row = (user_id, session_id, turn.number, turn.request_id, json.dumps(turn.parsed.to_dict()),
               json.dumps(list(turn.shown)), turn.time_ms)
        with self._db.transaction():
            self._touch(user_id, session_id, now, turn.number + 1)
            self._db.execute("INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, session_id, turn) "
                             "DO UPDATE SET request_id = excluded.request_id, parsed = excluded.parsed, "
                             "shown = excluded.shown, time_ms = excluded.time_ms", row)
            self._db.execute("DELETE FROM turns WHERE user_id = ? AND session_id = ? AND turn <= ?",
                             (user_id, session_id, turn.number - self.max_turns))
        self._maybe_purge()

    def record_feedback(self, user_id: str, session_id: str, items: Sequence[tuple[str, bool]]) -> None:
        """Notes items accepted (True) or rejected (False) in the session; starts the session if needed."""
        now = self._now_ms()
        with self._db.transaction():
            row = self._db.execute("SELECT updated_ms FROM sessions WHERE user_id = ? AND session_id = ?",
                                   (user_id, session_id)).fetchone()
            if row is not None and row[0] < now - self.ttl_ms:
                self._erase(user_id, session_id)
            self._touch(user_id, session_id, now, None)
            self._db.executemany("INSERT INTO session_feedback (user_id, session_id, item_id, positive, time_ms) "
                                 "VALUES (?, ?, ?, ?, ?)", [(user_id, session_id, i, int(p), now) for i, p in items])
            self._db.execute(
                "DELETE FROM session_feedback WHERE user_id = ? AND session_id = ? AND seq NOT IN (SELECT seq FROM "
                "session_feedback WHERE user_id = ? AND session_id = ? ORDER BY seq DESC LIMIT ?)",
                (user_id, session_id, user_id, session_id, MAX_FEEDBACK))

    def _touch(self, user_id: str, session_id: str, now: int, next_turn: int | None) -> None:
        self._db.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?) ON CONFLICT(user_id, session_id) DO UPDATE SET "
            "updated_ms = excluded.updated_ms, next_turn = CASE WHEN sessions.next_turn > excluded.next_turn "
            "THEN sessions.next_turn ELSE excluded.next_turn END",
            (user_id, session_id, now, now, next_turn or 1))

    def _erase(self, user_id: str, session_id: str) -> None:
        for table in ("turns", "session_feedback", "sessions"):
            self._db.execute(f"DELETE FROM {table} WHERE user_id = ? AND session_id = ?", (user_id, session_id))

    def _maybe_purge(self) -> None:
        if self._clock() - self._purged_at >= PURGE_INTERVAL_S:
            self.purge_expired()

    def purge_expired(self) -> int:
        """Erases every expired session; returns how many."""
        self._purged_at = self._clock()
        with self._db.transaction():
            expired = self._db.execute("SELECT user_id, session_id FROM sessions WHERE updated_ms < ?",
                                       (self._now_ms() - self.ttl_ms,)).fetchall()
            for user_id, session_id in expired:
                self._erase(user_id, session_id)
        return len(expired)

    def delete_user(self, user_id: str) -> int:
        """Erases every session of the user (DeleteUserData), leaving no copy in the files; returns how
        many there were."""
        with self._db.transaction():
            count = self._db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,)).rowcount
            self._db.execute("DELETE FROM turns WHERE user_id = ?", (user_id,))
            self._db.execute("DELETE FROM session_feedback WHERE user_id = ?", (user_id,))
        self._db.scrub(["sessions", "turns", "session_feedback"])
        return count

    def session_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]

    def close(self) -> None:
        self._db.close()
