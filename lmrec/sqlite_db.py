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
    db.executescript(schema)
    return db
