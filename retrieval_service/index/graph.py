"""One hnswlib graph with the per-slot bookkeeping keyed by its labels, and the value types around it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import hnswlib
import numpy as np

from retrieval_service.index.config import IndexConfig
from retrieval_service.tables import AttributeTable, IdTable

METRIC = "cosine"
# Rows fetched from hnswlib per get_items call while copying a graph for a rebuild; each call
# holds the read lock, so this bounds how long a writer can wait behind the copy, and the GIL (get_items
# does not release it), so it bounds how long every search of the process stalls: 6,000 rows of 384-d
# hold it ~190 ms, 1,024 rows ~22 ms (2-core EPYC; docs/benchmarks.md, resharding).
COPY_CHUNK = 1_024

Attributes = Mapping[str, Sequence[str]]


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalises rows (float32); raises ValueError for a zero or non-finite row."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise ValueError("vectors must be finite and non-zero")
    return vectors / norms


def clean_attributes(attributes: Attributes | None) -> dict[str, list[str]] | None:
    """Attributes without empty keys or repeated values; None when nothing is left."""
    if not attributes:
        return None
    cleaned = {k: list(dict.fromkeys(v)) for k, v in attributes.items() if v}
    return cleaned or None


@dataclass
class FilterGraph:
    """An HNSW graph over the items holding one attribute value, labelled by their slots in the main graph.

    Qdrant builds such graphs for payload-indexed values; hnswlib cannot add filter-aware links to one
    graph, so this is a second graph, and a second copy of those items' vectors (~1.8 kB each).
    """

    hnsw: hnswlib.Index
    size: int


@dataclass
class Graph:
    """One hnswlib graph and the bookkeeping keyed by its labels; a rebuild builds a new one and swaps it in.

    Labels are slots: a deleted item's label goes on `free` and the next new item revives that very
    slot (hnswlib re-adds a deleted label in place). hnswlib's own `replace_deleted=True` would hand a
    vacant slot a new label and drop the old label's lookup entry, so a label we later reuse could lose
    its mapping; reviving by label gives the same slot reuse without that hazard.
    """

    hnsw: hnswlib.Index
    live: np.ndarray
    ids: IdTable
    attributes: AttributeTable
    # Optional copy of each slot's normalised vector for exact scans (None: read rows from hnswlib,
    # ~20 us each, and keep ~770-1540 bytes an item less).
    shadow: np.ndarray | None
    free: list[int] = field(default_factory=list)
    next_label: int = 0
    filter_graphs: dict[tuple[str, str], FilterGraph] = field(default_factory=dict)
    # Slots written while a filter graph is being built; the build catches up on them before it is used.
    touched: list[np.ndarray] | None = None

    @property
    def capacity(self) -> int:
        return self.hnsw.get_max_elements()

    @property
    def live_count(self) -> int:
        return self.ids.count

    def rows(self, labels: np.ndarray) -> np.ndarray:
        """float32 vectors of `labels` (from the copy when there is one)."""
        if self.shadow is not None:
            return self.shadow[labels].astype(np.float32, copy=False)
        if len(labels) == 0:
            return np.empty((0, self.hnsw.dim), dtype=np.float32)
        return self.hnsw.get_items(labels, return_type="numpy")

    def grow(self, capacity: int) -> None:
        self.hnsw.resize_index(capacity)
        if self.shadow is not None:
            extra = np.zeros((capacity - len(self.shadow), self.shadow.shape[1]), self.shadow.dtype)
            self.shadow = np.concatenate([self.shadow, extra])
        self.live = np.concatenate([self.live, np.zeros(capacity - len(self.live), bool)])
        self.ids.grow(capacity)
        self.attributes.grow(capacity)

    def value_graphs(self, key: str, values: Sequence[str]) -> list[FilterGraph | None]:
        """The graph of each of `values` the index knows (None where it has none yet)."""
        return [self.filter_graphs.get((key, v)) for v in values if self.attributes.known(key, v)]


def new_graph(dimension: int, config: IndexConfig, capacity: int, hnsw: hnswlib.Index | None = None) -> Graph:
    """An empty graph of `capacity` slots, or the bookkeeping for a loaded `hnsw` (filled in by the caller)."""
    if hnsw is None:
        hnsw = hnswlib.Index(space="ip", dim=dimension)
        hnsw.init_index(max_elements=capacity, M=config.m, ef_construction=config.ef_construction)
    dtype = config.exact_scan_dtype
    return Graph(
        hnsw=hnsw,
        live=np.zeros(capacity, dtype=bool),
        ids=IdTable(capacity),
        attributes=AttributeTable(capacity),
        shadow=None if dtype == "none" else np.zeros((capacity, dimension), np.dtype(dtype)),
    )
