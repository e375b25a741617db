"""Durable store of candidate-side item representations, so Rank never re-encodes a catalogue item.

SQLite holds (item_id, text, model_version, vector); memory holds a dense matrix for fast gathers. On a
model change the stored texts are re-encoded, so a new bundle never ranks with stale vectors.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


class ItemStore:
    # The table of representations; ray_serve/store_sync.py puts its change-log triggers on it.
    TABLE = "item_repr"

    def __init__(self, path: Path, dimension: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS item_repr (item_id TEXT PRIMARY KEY, text TEXT NOT NULL, "
            "model_version TEXT NOT NULL, vector BLOB NOT NULL)"
        )
        self.dimension = dimension
        self._lock = threading.Lock()
        self._rows: dict[str, int] = {}
        self._free: list[int] = []
        self._matrix = np.zeros((1024, dimension), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._rows)

    def load(self, model_version: str, reencode: Callable[[list[str]], np.ndarray], batch: int = 256) -> int:
        """Loads every stored item; re-encodes those written by another model version. Returns that count."""
        stale_ids, stale_texts = [], []
        for item_id, text, version, blob in self._db.execute("SELECT item_id, text, model_version, vector FROM item_repr"):
            vector = np.frombuffer(blob, dtype=np.float32)
            if version == model_version and vector.shape[0] == self.dimension:
                self._put_memory([item_id], vector[None, :])
            else:
                stale_ids.append(item_id)
                stale_texts.append(text)
        for start in range(0, len(stale_ids), batch):
            ids, texts = stale_ids[start:start + batch], stale_texts[start:start + batch]
            self.put(ids, texts, reencode(texts), model_version)
        return len(stale_ids)

    def put(self, item_ids: Sequence[str], texts: Sequence[str], vectors: np.ndarray, model_version: str) -> None:
        rows = [(i, t, model_version, v.astype(np.float32).tobytes()) for i, t, v in zip(item_ids, texts, vectors)]
        with self._lock:
            with self._db:
                self._db.executemany(
                    "INSERT INTO item_repr VALUES (?, ?, ?, ?) ON CONFLICT(item_id) DO UPDATE SET "
                    "text=excluded.text, model_version=excluded.model_version, vector=excluded.vector", rows)
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
                self._db.executemany("DELETE FROM item_repr WHERE item_id = ?", [(i,) for i in item_ids])
            return self._drop_memory(item_ids)

    def _drop_memory(self, item_ids) -> int:
        removed = 0
        for item_id in item_ids:
            row = self._rows.pop(item_id, None)
            if row is not None:
                self._free.append(row)
                removed += 1
        return removed

    def refresh(self, item_ids, model_version: str, chunk: int = 500) -> None:
        ids = list(dict.fromkeys(item_ids))
        with self._lock:
            for start in range(0, len(ids), chunk):
                part = ids[start:start + chunk]
                marks = ",".join("?" * len(part))
                stored = {item_id: np.frombuffer(blob, dtype=np.float32) for item_id, blob in self._db.execute(
                    f"SELECT item_id, vector FROM item_repr WHERE model_version = ? AND item_id IN ({marks})",
                    [model_version, *part])}
                fresh = [i for i, v in stored.items() if v.shape[0] == self.dimension]
                if fresh:
                    self._put_memory(fresh, np.stack([stored[i] for i in fresh]))
                self._drop_memory(set(part).difference(fresh))

    def stored_ids(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT item_id FROM item_repr")]

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
