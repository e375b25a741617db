"""Durable store of candidate-side item representations, so Rank never re-encodes a catalogue item.

SQLite holds (item_id, model_version, text, vector) rows; memory holds one model version's vectors as a
dense matrix for fast gathers. Rows are kept per model version so a new bundle can be loaded and its
vectors computed while the old one still serves from its own rows (hot swap); `reconcile` then catches up
with writes the old model took meanwhile, and `prune` drops the old version's rows. A write with a new
text deletes the item's rows of other versions, whose vectors it makes stale.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

Reencode = Callable[[list[str], list[str]], np.ndarray]  # (item ids, texts) -> vectors


class ItemStore:
    # The table of representations; ray_serve/store_sync.py puts its change-log triggers on it.
    TABLE = "item_vectors"

    def __init__(self, path: Path, dimension: int, model_version: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS item_vectors (item_id TEXT NOT NULL, model_version TEXT NOT NULL, "
            "text TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (item_id, model_version))"
        )
        self._migrate_single_version_table()
        self.dimension = dimension
        self.model_version = model_version
        self._lock = threading.Lock()
        self._rows: dict[str, int] = {}
        self._free: list[int] = []
        self._matrix = np.zeros((1024, dimension), dtype=np.float32)

    def _migrate_single_version_table(self) -> None:
        """State written before rows were versioned: keep the texts, their vectors get re-encoded."""
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'item_repr'").fetchone():
            with self._db:
                self._db.execute("INSERT OR IGNORE INTO item_vectors SELECT item_id, model_version, text, vector "
                                 "FROM item_repr")
                self._db.execute("DROP TABLE item_repr")

    def __len__(self) -> int:
        return len(self._rows)

    def load(self, reencode: Reencode, batch: int = 256) -> int:
        """Loads this version's rows; encodes items only stored under other versions. Returns that count."""
        for item_id, blob in self._db.execute(
                "SELECT item_id, vector FROM item_vectors WHERE model_version = ?", (self.model_version,)):
            vector = np.frombuffer(blob, dtype=np.float32)
            if vector.shape[0] == self.dimension:
                self._put_memory([item_id], vector[None, :])
        return self.reconcile(reencode, batch)

    def reconcile(self, reencode: Reencode, batch: int = 256) -> int:
        """Brings this version in line with the table: encodes items it has no row for (written through
        another model meanwhile, or given a new text there), drops items deleted meanwhile. Returns how
        many were encoded."""
        lacking = dict(self._db.execute(
            "SELECT item_id, text FROM (SELECT item_id, text, max(rowid) FROM item_vectors GROUP BY item_id "
            "HAVING sum(model_version = ?) = 0)", (self.model_version,)).fetchall())
        encoded = self.encode_and_put(lacking, reencode, batch)
        stored = set(self.stored_ids())
        with self._lock:
            self._drop_memory([i for i in self._rows if i not in stored])
        return encoded

    def encode_and_put(self, texts: dict[str, str], reencode: Reencode, batch: int = 256) -> int:
        """Encodes {item_id: text} with this version's model in batches and stores it; returns how many."""
        ids = list(texts)
        for start in range(0, len(ids), batch):
            part = ids[start:start + batch]
            part_texts = [texts[i] for i in part]
            self.put(part, part_texts, reencode(part, part_texts))
        return len(ids)

    def prune(self, keep: Iterable[str] = ()) -> int:
        """Drops the rows of every model version but this one and `keep` (after a swap to this one)."""
        versions = [self.model_version, *keep]
        marks = ",".join("?" * len(versions))
        with self._lock, self._db:
            return self._db.execute(f"DELETE FROM item_vectors WHERE model_version NOT IN ({marks})",
                                    versions).rowcount

    def put(self, item_ids: Sequence[str], texts: Sequence[str], vectors: np.ndarray) -> None:
        """Stores this version's vectors. Another version's row of the same item with another text is
        stale from now on and deleted, so a worker on that version re-encodes the new text."""
        rows = [(i, self.model_version, t, v.astype(np.float32).tobytes()) for i, t, v in zip(item_ids, texts, vectors)]
        with self._lock:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO item_vectors VALUES (?, ?, ?, ?)", rows)
                self._db.executemany(
                    "DELETE FROM item_vectors WHERE item_id = ? AND model_version != ? AND text != ?",
                    [(i, self.model_version, t) for i, t in zip(item_ids, texts)])
            self._put_memory(item_ids, vectors)

    def _put_memory(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        for item_id, vector in zip(item_ids, vectors):
            row = self._rows.get(item_id)
            if row is None:
                row = self._free.pop() if self._free else len(self._rows)
                if row >= self._matrix.shape[0]:
                    grown = np.zeros((self._matrix.shape[0] * 2, self.dimension), dtype=np.float32)
                    grown[: self._matrix.shape[0]] = self._matrix
                    self._matrix = grown
                self._rows[item_id] = row
            self._matrix[row] = vector

    def delete(self, item_ids: Sequence[str]) -> int:
        with self._lock:
            with self._db:
                self._db.executemany("DELETE FROM item_vectors WHERE item_id = ?", [(i,) for i in item_ids])
            return self._drop_memory(item_ids)

    def _drop_memory(self, item_ids: Iterable[str]) -> int:
        removed = 0
        for item_id in item_ids:
            row = self._rows.pop(item_id, None)
            if row is not None:
                self._free.append(row)
                removed += 1
        return removed

    def refresh(self, item_ids: Iterable[str], model_version: str, chunk: int = 500) -> dict[str, str]:
        """Re-reads these items from SQLite into memory: loaded where stored, dropped where gone.

        For workers that share one SQLite file (Ray Serve replicas): each picks up what another wrote.
        Rows of another model version are never ranked; items stored only under another version (written
        by a replica on another model, mid-swap) are returned as {item_id: text} for the caller to encode.
        """
        ids = list(dict.fromkeys(item_ids))
        lacking: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(ids), chunk):
                part = ids[start:start + chunk]
                marks = ",".join("?" * len(part))
                stored = {item_id: np.frombuffer(blob, dtype=np.float32) for item_id, blob in self._db.execute(
                    f"SELECT item_id, vector FROM item_vectors WHERE model_version = ? AND item_id IN ({marks})",
                    [model_version, *part])}
                fresh = [i for i, v in stored.items() if v.shape[0] == self.dimension]
                if fresh:
                    self._put_memory(fresh, np.stack([stored[i] for i in fresh]))
                self._drop_memory(set(part).difference(fresh))
                lacking.update((item_id, text) for item_id, text, _ in self._db.execute(
                    f"SELECT item_id, text, max(rowid) FROM item_vectors WHERE item_id IN ({marks}) "
                    f"GROUP BY item_id HAVING sum(model_version = ?) = 0", [*part, model_version]))
        return lacking

    def stored_ids(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT DISTINCT item_id FROM item_vectors")]

    def known_ids(self) -> list[str]:
        return list(self._rows)

    def gather(self, item_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for the ids (zeros where unknown) and a boolean mask of which were known."""
        rows = np.array([self._rows.get(i, -1) for i in item_ids], dtype=np.int64)
        known = rows >= 0
        out = np.zeros((len(item_ids), self.dimension), dtype=np.float32)
        if known.any():
            out[known] = self._matrix[rows[known]]
        return out, known

    def close(self) -> None:
        self._db.close()
