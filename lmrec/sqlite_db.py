"""The one way lmrec opens a local SQLite state file: WAL, autocommit, usable from worker threads."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_wal(path: Path, schema: str, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Opens (creating folders and tables) `path`. `synchronous`: FULL where an acknowledged write must
    survive a power cut (events), NORMAL where losing the last moments is acceptable (logs, sessions)."""
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    # A deleted row's bytes (and a freed page's) are overwritten with zeros instead of lingering in free
    # space, so an erasure leaves no copy; builds differ in the default (Debian's is on, others off).
    db.execute("PRAGMA secure_delete=ON")
    db.executescript(schema)
    return db


def checkpoint_truncate(db: sqlite3.Connection) -> bool:
    """Copies the WAL into the database file and truncates the WAL to zero bytes, so the pages a deletion
    overwrote leave no older copy in the -wal file. False when a reader kept it from completing (the
    connection's busy timeout, 5 s by default, was spent waiting); calling again later finishes it."""
    busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return busy == 0
