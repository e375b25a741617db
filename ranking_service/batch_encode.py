"""Item texts -> served item vectors in bulk, off the request path (`lmrec encode-catalog`).

`CatalogEncoder.encode` is the ranking worker's own `LoadedModel.encode_items` on a model that
`load_model` built from the same settings (bundle, device, precision, item precision), so the vectors are
the ones a worker would store: the bundle's training-time text vectors for unchanged trained items, the
item encoder for the rest, then the ranker's item tower. No Ray here: training/encode_catalog.py runs it
in this process or in each actor of a Ray Data pool.

Two outputs, from the same vectors:
  * a vectors file: FILE.npy (float32 [n, d], rows in input order) and FILE.ids.json
    ({"model_version", "dimension", "item_ids"}), read back with `read_vectors`;
  * rows in a ranking worker's item store (`<state_dir>/item_repr.sqlite`, ItemStore) under the bundle's
    model version. ItemStore.load reads a version's rows when a worker starts on a bundle and when it
    hot-swaps to one (ranking_service/model.py:load_model), and encodes only the items it finds no row
    for, so a worker on this bundle encodes none of these.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lmrec.errors import ArtifactMismatch
from ranking_service.item_store import ItemStore
from ranking_service.model import load_model
from ranking_service.settings import RankingSettings

# The file name load_model gives a worker's item store under its state_dir.
ITEM_STORE_FILE = "item_repr.sqlite"


class CatalogEncoder:
    """A ranking worker's item encoding, without the worker: its model over a throwaway item store."""

    def __init__(self, settings: RankingSettings) -> None:
        self._state = tempfile.TemporaryDirectory(prefix="lmrec-encode-")
        self.model = load_model(settings.model_copy(update={"state_dir": Path(self._state.name), "warmup": False}))

    @property
    def model_version(self) -> str:
        return self.model.manifest.model_version

    @property
    def dimension(self) -> int:
        return self.model.manifest.served_dimension

    def encode(self, item_ids: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Served vectors, float32 [n, dimension], one row per (item id, text)."""
        return self.model.encode_items(list(item_ids), list(texts))

    def close(self) -> None:
        self.model.store.close()
        self._state.cleanup()


def ids_path(vectors_path: Path) -> Path:
    return Path(vectors_path).with_suffix(".ids.json")


class VectorsWriter:
    """Writes a vectors file row by row in any order (memory-mapped, so a catalogue larger than memory
    streams through), then its ids file; the pair appears only when complete (renamed into place)."""

    def __init__(self, path: Path, count: int, dimension: int, model_version: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}.npy")
        self._matrix = np.lib.format.open_memmap(self._partial, mode="w+", dtype=np.float32, shape=(count, dimension))
        self._written = np.zeros(count, dtype=bool)
        self.dimension, self.model_version = dimension, model_version

    def write(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        self._matrix[rows] = vectors
        self._written[rows] = True

    def close(self, item_ids: Sequence[str]) -> None:
        """Raises ValueError when some row was never written (the file is then not published)."""
        missing = int((~self._written).sum())
        if missing:
            raise ValueError(f"{missing} of {len(self._written)} item vectors were never written")
        if len(item_ids) != len(self._written):
            raise ValueError(f"{len(item_ids)} ids for {len(self._written)} vectors")
        self._matrix.flush()
        del self._matrix
        meta = {"model_version": self.model_version, "dimension": self.dimension, "item_ids": list(item_ids)}
        partial_ids = self._partial.with_suffix(".ids.json")
        partial_ids.write_text(json.dumps(meta))
        os.replace(self._partial, self.path)
        os.replace(partial_ids, ids_path(self.path))


def read_vectors(path: Path) -> tuple[list[str], np.ndarray, str]:
    """(item ids, vectors [n, d] memory-mapped, model version) of a vectors file."""
    meta = json.loads(ids_path(path).read_text())
    vectors = np.load(path, mmap_mode="r")
    if vectors.shape != (len(meta["item_ids"]), meta["dimension"]):
        raise ArtifactMismatch(f"{path}: vectors of shape {vectors.shape} for {len(meta['item_ids'])} ids of "
                               f"dimension {meta['dimension']}")
    return meta["item_ids"], vectors, meta["model_version"]


def put_in_item_store(store_path: Path, model_version: str, item_ids: Sequence[str], texts: Sequence[str],
                      vectors: np.ndarray, chunk: int = 10_000) -> int:
    """Stores the vectors as `model_version`'s rows of the item store at `store_path` (created if absent;
    a worker may be running on it: SQLite WAL, one transaction per chunk). Returns how many."""
    store = ItemStore(Path(store_path), vectors.shape[1], model_version)
    try:
        for start in range(0, len(item_ids), chunk):
            store.put(item_ids[start:start + chunk], texts[start:start + chunk],
                      np.asarray(vectors[start:start + chunk], dtype=np.float32))
    finally:
        store.close()
    return len(item_ids)
