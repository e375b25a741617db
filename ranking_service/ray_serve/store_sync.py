"""Keeps each Ray Serve replica's in-memory item representations in step with the shared SQLite file.

Replicas share one `item_repr.sqlite` (same state_dir; on Kubernetes a ReadWriteMany volume). Encode and
ForgetItems run on one replica and commit there; every other replica must see the change on its next
read, or Rank would score a new item as unknown, an updated item with its old text, a forgotten one at
all. So:

- triggers append every insert/update/delete of the store's table to `item_repr_log` (an AUTOINCREMENT
  sequence), in the writer's own transaction, whichever process writes;
- before each call a replica asks SQLite `PRAGMA data_version`, which changes only when another
  connection has committed: a few microseconds when nothing changed;
- when it changed, the replica re-reads the items logged after the last sequence it applied;
- during a hot swap replicas serve two model versions for a moment: an item written by a replica on
  the other version (no row under this replica's version) is encoded with this replica's model.

The log keeps the last `LOG_KEEP` changes; a replica that fell further behind (its next sequence was
pruned) re-reads everything. Broadcasting writes to every replica through Serve was the alternative;
it loses writes to a replica that is starting or restarting, which the shared file does not.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ranking_service.item_store import ItemStore, Reencode

LOG_KEEP = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS item_repr_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, item_id TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS item_repr_log_insert AFTER INSERT ON {table} BEGIN
  INSERT INTO item_repr_log (item_id) VALUES (NEW.item_id);
  DELETE FROM item_repr_log WHERE seq <= last_insert_rowid() - {keep};
END;
CREATE TRIGGER IF NOT EXISTS item_repr_log_update AFTER UPDATE ON {table} BEGIN
  INSERT INTO item_repr_log (item_id) VALUES (NEW.item_id);
  DELETE FROM item_repr_log WHERE seq <= last_insert_rowid() - {keep};
END;
CREATE TRIGGER IF NOT EXISTS item_repr_log_delete AFTER DELETE ON {table} BEGIN
  INSERT INTO item_repr_log (item_id) VALUES (OLD.item_id);
  DELETE FROM item_repr_log WHERE seq <= last_insert_rowid() - {keep};
END;
"""


class ItemStoreFollower:
    """Applies other writers' changes of the shared SQLite file to `store`'s memory.

    Create it after the store has loaded (the store's table exists then); it re-reads everything once,
    which covers writes made before its triggers existed.
    """

    def __init__(self, store: ItemStore, path: Path, model_version: str, encode: Reencode,
                 log_keep: int = LOG_KEEP) -> None:
        self._store = store
        self._model_version = model_version
        self._encode = encode
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.executescript(_SCHEMA.format(table=store.TABLE, keep=log_keep))
        self._seen_version = self._data_version()
        self._last_seq = self._max_seq()
        self.full_reloads = 0
        self.items_reloaded = 0
        self.items_encoded = 0
        self._reload_all()

    def _data_version(self) -> int:
        return self._db.execute("PRAGMA data_version").fetchone()[0]

    def _max_seq(self) -> int:
        return self._db.execute("SELECT coalesce(max(seq), 0) FROM item_repr_log").fetchone()[0]

    def _reload_all(self) -> None:
        self.full_reloads += 1
        self._apply({*self._store.stored_ids(), *self._store.known_ids()})

    def _apply(self, item_ids) -> None:
        lacking = self._store.refresh(item_ids, self._model_version)
        # Written by a replica on another model version (mid-swap): encode with ours.
        self.items_encoded += self._store.encode_and_put(lacking, self._encode)

    def catch_up(self) -> int:
        """Applies changes committed by other connections since the last call; returns how many items."""
        version = self._data_version()
        if version == self._seen_version:
            return 0
        self._seen_version = version
        rows = self._db.execute("SELECT seq, item_id FROM item_repr_log WHERE seq > ? ORDER BY seq",
                                (self._last_seq,)).fetchall()
        if not rows:
            return 0
        if rows[0][0] != self._last_seq + 1:  # the log was pruned past us: re-read everything
            self._last_seq = rows[-1][0]
            self._reload_all()
            return len(self._store)
        self._last_seq = rows[-1][0]
        changed = {item_id for _, item_id in rows}
        self._apply(changed)
        self.items_reloaded += len(changed)
        return len(changed)

    def close(self) -> None:
        self._db.close()
