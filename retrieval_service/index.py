"""Cosine-similarity vector index over hnswlib with string ids, multi-valued attributes and planned filtering.

Knows hnswlib and numpy, not gRPC. Thread-safe: searches run concurrently, writes exclusively.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import hnswlib
import numpy as np

from retrieval_service.locks import ReadersWriterLock, SharedSetting

log = logging.getLogger(__name__)

METRIC = "cosine"
SNAPSHOT_FORMAT = 1
# Rows fetched from hnswlib per get_items call while copying a graph for a rebuild; each call
# holds the read lock, so this bounds how long a writer can wait behind the copy.
_COPY_CHUNK = 8_192
_EXACT_CHUNK = 65_536

Attributes = Mapping[str, Sequence[str]]
Filter = tuple[str, Sequence[str]]


@dataclass(frozen=True)
class SearchResult:
    ids: list[str]
    scores: list[float]
    # "hnsw", "hnsw_filtered", "exact", or "none" when there was nothing to search with.
    plan: str


@dataclass(frozen=True)
class IndexStats:
    item_count: int
    dimension: int
    capacity: int
    tombstone_count: int
    metric: str
    rebuilding: bool


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalises rows (float32); raises ValueError for a zero or non-finite row."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise ValueError("vectors must be finite and non-zero")
    return vectors / norms


@dataclass
class _Graph:
    """One hnswlib graph and the bookkeeping keyed by its labels; a rebuild builds a new one and swaps it in.

    Labels are slots: a deleted item's label goes on `free` and the next new item revives that very
    slot (hnswlib re-adds a deleted label in place). hnswlib's own `replace_deleted=True` would hand a
    vacant slot a new label and drop the old label's lookup entry, so a label we later reuse could lose
    its mapping; reviving by label gives the same slot reuse without that hazard.
    """

    hnsw: hnswlib.Index
    # Copy of each slot's normalised vector (float16 by default: half the memory of float32, scores
    # within ~1e-3): exact scans and "more like these" read it with numpy, because hnswlib's
    # get_items costs ~20 us per row.
    shadow: np.ndarray
    live: np.ndarray
    ids: list[str | None]
    attributes: list[dict[str, list[str]] | None]
    label_of: dict[str, int] = field(default_factory=dict)
    postings: dict[str, dict[str, set[int]]] = field(default_factory=dict)
    free: list[int] = field(default_factory=list)
    next_label: int = 0
    _posting_arrays: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    # Never shrinks until a rebuild starts a new graph; bounded by the distinct combinations seen.
    _shared_attributes: dict[tuple, dict[str, list[str]]] = field(default_factory=dict)

    @property
    def capacity(self) -> int:
        return self.hnsw.get_max_elements()

    @property
    def live_count(self) -> int:
        return len(self.label_of)

    def posting_array(self, key: str, value: str) -> np.ndarray | None:
        cached = self._posting_arrays.get((key, value))
        if cached is not None:
            return cached
        labels = self.postings.get(key, {}).get(value)
        if not labels:
            return None
        # Concurrent readers may both fill the cache; they compute the same array, so last write wins harmlessly.
        array = np.fromiter(labels, dtype=np.int64, count=len(labels))
        self._posting_arrays[(key, value)] = array
        return array

    def index_attributes(self, label: int, attributes: dict[str, list[str]] | None) -> None:
        if attributes is not None:
            # Catalogues repeat a few attribute combinations many times: keep one shared copy of each.
            signature = tuple((k, tuple(v)) for k, v in attributes.items())
            attributes = self._shared_attributes.setdefault(signature, attributes)
        self.attributes[label] = attributes
        for key, values in (attributes or {}).items():
            by_value = self.postings.setdefault(key, {})
            for value in values:
                by_value.setdefault(value, set()).add(label)
                self._posting_arrays.pop((key, value), None)

    def unindex_attributes(self, label: int) -> None:
        for key, values in (self.attributes[label] or {}).items():
            by_value = self.postings[key]
            for value in values:
                labels = by_value[value]
                labels.discard(label)
                if not labels:
                    del by_value[value]
                self._posting_arrays.pop((key, value), None)
            if not by_value:
                del self.postings[key]
        self.attributes[label] = None

    def grow(self, capacity: int) -> None:
        self.hnsw.resize_index(capacity)
        extra = capacity - len(self.live)
        self.shadow = np.concatenate([self.shadow, np.zeros((extra, self.shadow.shape[1]), self.shadow.dtype)])
        self.live = np.concatenate([self.live, np.zeros(extra, bool)])
        self.ids.extend([None] * extra)
        self.attributes.extend([None] * extra)


class VectorIndex:
    """Top-k by cosine similarity (higher is better) over items with string ids and attributes.

    Args:
        dimension: vector length.
        m, ef_construction: HNSW graph parameters.
        initial_capacity: slots allocated up front; capacity doubles when full.
        ef_default, ef_min, ef_max: search breadth used when none is asked for, and its bounds.
        exact_scan_threshold: eligible-set size at or below which a search is a brute-force scan.
        walk_cost_per_ef: what one unit of `ef` costs a graph walk, in rows of exact scan (about 24 on
            an AVX-512 EPYC at 384-d). A filtered walk costs about that times ef / selectivity, so a
            restricted search over more than `exact_scan_threshold` items still scans exactly when
            eligible^2 < walk_cost_per_ef * ef * live items. 0 turns this rule off.
        tombstone_rebuild_ratio: deleted-but-unreused slots, as a share of all slots, that start a rebuild.
        build_threads: threads hnswlib uses to insert a batch.
        exact_scan_dtype: "float16" or "float32" copy of the vectors for exact scans.
        auto_rebuild: start background rebuilds on its own (tests turn it off to drive them).
    """

    def __init__(
        self,
        dimension: int,
        *,
        m: int = 16,
        ef_construction: int = 200,
        initial_capacity: int = 10_000,
        ef_default: int = 128,
        ef_min: int = 16,
        ef_max: int = 2048,
        exact_scan_threshold: int = 4_000,
        walk_cost_per_ef: float = 24.0,
        tombstone_rebuild_ratio: float = 0.2,
        build_threads: int = 2,
        exact_scan_dtype: str = "float16",
        auto_rebuild: bool = True,
    ) -> None:
        if exact_scan_dtype not in ("float16", "float32"):
            raise ValueError(f"exact_scan_dtype must be float16 or float32, got {exact_scan_dtype!r}")
        self.shadow_dtype = np.dtype(exact_scan_dtype)
        self.dimension = dimension
        self.m = m
        self.ef_construction = ef_construction
        self.initial_capacity = initial_capacity
        self.ef_default = ef_default
        self.ef_min = ef_min
        self.ef_max = ef_max
        self.exact_scan_threshold = exact_scan_threshold
        self.walk_cost_per_ef = walk_cost_per_ef
        self.tombstone_rebuild_ratio = tombstone_rebuild_ratio
        self.build_threads = build_threads
        self.auto_rebuild = auto_rebuild
        self._lock = ReadersWriterLock()
        self._ef = SharedSetting()
        self._graph = self._empty_graph(initial_capacity)
        # Writes applied while a rebuild copies the graph; replayed onto the new graph before the swap.
        self._rebuild_log: list[tuple[str, tuple]] | None = None
        self._rebuild_thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings, **overrides) -> VectorIndex:
        """Builds an empty index from `RetrievalSettings` (or anything with the same fields)."""
        kwargs = dict(
            m=settings.m,
            ef_construction=settings.ef_construction,
            initial_capacity=settings.initial_capacity,
            ef_default=settings.ef_default,
            ef_min=settings.ef_min,
            ef_max=settings.ef_max,
            exact_scan_threshold=settings.exact_scan_threshold,
            walk_cost_per_ef=settings.walk_cost_per_ef,
            tombstone_rebuild_ratio=settings.tombstone_rebuild_ratio,
            build_threads=settings.build_threads,
            exact_scan_dtype=settings.exact_scan_dtype,
        )
        kwargs.update(overrides)
        return cls(settings.dimension, **kwargs)

    # ----------------------------------------------------------------- writes

    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        attributes: Sequence[Attributes | None] | None = None,
    ) -> int:
        """Adds or replaces items; a repeated id in one batch keeps its last occurrence.

        Raises:
            ValueError: lengths disagree, wrong dimension, or a zero/non-finite vector.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(ids), self.dimension):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dimension}), got {vectors.shape}")
        if attributes is not None and len(attributes) != len(ids):
            raise ValueError("attributes must have one entry per id")
        vectors = normalize(vectors)
        attrs = [_clean_attributes(a) for a in (attributes or [None] * len(ids))]
        last = {item_id: i for i, item_id in enumerate(ids)}
        if len(last) != len(ids):
            keep = sorted(last.values())
            ids = [ids[i] for i in keep]
            vectors = vectors[keep]
            attrs = [attrs[i] for i in keep]
        with self._lock.write():
            self._upsert_into(self._graph, list(ids), vectors, attrs)
            if self._rebuild_log is not None:
                self._rebuild_log.append(("upsert", (list(ids), vectors, attrs)))
        return len(ids)

    def delete(self, ids: Iterable[str]) -> int:
        """Removes items; returns how many existed."""
        ids = list(dict.fromkeys(ids))
        with self._lock.write():
            deleted = self._delete_from(self._graph, ids)
            if self._rebuild_log is not None:
                self._rebuild_log.append(("delete", (ids,)))
            start = self.auto_rebuild and self._wants_rebuild()
        if start:
            self.start_rebuild()
        return deleted

    def _upsert_into(self, g: _Graph, ids: list[str], vectors: np.ndarray, attrs: list) -> None:
        new_count = sum(1 for item_id in ids if item_id not in g.label_of)
        fresh_needed = max(0, new_count - len(g.free))
        if g.next_label + fresh_needed > g.capacity:
            g.grow(max(2 * g.capacity, g.next_label + fresh_needed))
        labels = np.empty(len(ids), dtype=np.int64)
        free = list(g.free)
        next_label = g.next_label
        for i, item_id in enumerate(ids):
            label = g.label_of.get(item_id)
            if label is None:
                if free:
                    label = free.pop()
                else:
                    label = next_label
                    next_label += 1
            labels[i] = label
        # hnswlib first: if it fails, the bookkeeping still describes the graph.
        g.hnsw.add_items(vectors, labels, num_threads=self.build_threads)
        g.free = free
        g.next_label = next_label
        for item_id, label, attributes in zip(ids, labels.tolist(), attrs):
            if g.label_of.get(item_id) == label:
                g.unindex_attributes(label)
            g.label_of[item_id] = label
            g.ids[label] = item_id
            g.index_attributes(label, attributes)
        g.live[labels] = True
        g.shadow[labels] = vectors

    @staticmethod
    def _delete_from(g: _Graph, ids: list[str]) -> int:
        deleted = 0
        for item_id in ids:
            label = g.label_of.pop(item_id, None)
            if label is None:
                continue
            g.hnsw.mark_deleted(label)
            g.unindex_attributes(label)
            g.live[label] = False
            g.ids[label] = None
            g.free.append(label)
            deleted += 1
        return deleted

    # ---------------------------------------------------------------- rebuild

    def _wants_rebuild(self) -> bool:
        g = self._graph
        return (
            self._rebuild_log is None
            and len(g.free) > 0
            and len(g.free) >= self.tombstone_rebuild_ratio * max(g.next_label, 1)
        )

    def start_rebuild(self) -> threading.Thread | None:
        """Starts a background rebuild unless one is running; returns its thread."""
        with self._lock.read():
            if self._rebuild_thread is not None and self._rebuild_thread.is_alive():
                return None
            thread = threading.Thread(target=self.rebuild, name="retrieval-rebuild", daemon=True)
            self._rebuild_thread = thread
        thread.start()
        return thread

    def rebuild(self) -> bool:
        """Builds a compact graph of the live items, without tombstones, and swaps it in.

        Searches and writes go on meanwhile; writes made during the build are replayed onto the new
        graph under the write lock just before the swap. Returns False if another rebuild is running.
        """
        with self._lock.read():
            if self._rebuild_log is not None:
                return False
            old = self._graph
            labels = np.flatnonzero(old.live)
            ids = [old.ids[label] for label in labels.tolist()]
            attrs = [old.attributes[label] for label in labels.tolist()]
            # Safe under the read lock: writers, the only other users of the log, are excluded.
            self._rebuild_log = []
        try:
            log.info("rebuilding index: %d live items, %d tombstones", len(ids), len(old.free))
            fresh = self._empty_graph(max(self.initial_capacity, int(len(ids) * 1.25) + 1))
            for start in range(0, len(ids), _COPY_CHUNK):
                chunk = range(start, min(start + _COPY_CHUNK, len(ids)))
                with self._lock.read():
                    # Items deleted or re-assigned since the copy began are skipped: the log replays them.
                    still = [i for i in chunk if old.ids[labels[i]] == ids[i]]
                    if not still:
                        continue
                    vectors = old.hnsw.get_items(labels[still], return_type="numpy")
                self._upsert_into(fresh, [ids[i] for i in still], normalize(vectors), [attrs[i] for i in still])
            with self._lock.write():
                for op, args in self._rebuild_log:
                    if op == "upsert":
                        self._upsert_into(fresh, *args)
                    else:
                        self._delete_from(fresh, *args)
                self._graph = fresh
            log.info("rebuild swapped in: %d items", fresh.live_count)
            return True
        finally:
            with self._lock.write():
                self._rebuild_log = None

    def wait_for_rebuild(self, timeout: float | None = None) -> None:
        thread = self._rebuild_thread
        if thread is not None:
            thread.join(timeout)

    # ----------------------------------------------------------------- reads

    def clamp_ef(self, ef: int | None) -> int:
        if not ef:
            return self.ef_default
        return max(self.ef_min, min(self.ef_max, int(ef)))

    def search(
        self,
        query: np.ndarray,
        k: int,
        exclude: Iterable[str] = (),
        filters: Sequence[Filter] = (),
        ef: int | None = None,
    ) -> SearchResult:
        """Top-k live items by cosine similarity, best first.

        Plans by the eligible-set size and selectivity: a brute-force scan when the set is at most
        `exact_scan_threshold` or so small a share of the index that a filtered walk would cost more
        (see `walk_cost_per_ef`), otherwise HNSW (with a label filter when anything is excluded or filtered), widening `ef` and
        finally scanning exactly when the graph walk finds fewer than k eligible items. Returns
        min(k, eligible) results.

        Raises:
            ValueError: zero or non-finite query, wrong dimension, k < 1.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        query = np.asarray(query, dtype=np.float32)
        if query.shape != (self.dimension,):
            raise ValueError(f"query must have {self.dimension} dimensions, got {query.shape}")
        q = normalize(query)[0]
        ef = self.clamp_ef(ef)
        with self._lock.read():
            g = self._graph
            excluded = sorted({g.label_of[i] for i in exclude if i in g.label_of})
            mask = None
            if filters:
                mask = self._filter_mask(g, filters)
                mask[excluded] = False
                eligible = int(np.count_nonzero(mask))
            else:
                eligible = g.live_count - len(excluded)
            want = min(k, eligible)
            if want == 0:
                return SearchResult([], [], "exact")
            restricted = bool(filters) or bool(excluded)
            if eligible <= self.exact_scan_threshold or (
                restricted and eligible * eligible < self.walk_cost_per_ef * max(ef, want) * g.live_count
            ):
                return self._exact(g, q, self._eligible_labels(g, mask, excluded), want)
            if restricted and mask is None:
                mask = g.live.copy()
                mask[excluded] = False
            # bytes.__getitem__ is a C callable: hnswlib calls it per candidate without a Python frame.
            allowed = mask.tobytes().__getitem__ if restricted else None
            plan = "hnsw_filtered" if restricted else "hnsw"
            current = ef
            while True:
                try:
                    with self._ef.hold(current):
                        # Every holder sets the same value, so concurrent set_ef calls agree.
                        g.hnsw.set_ef(current)
                        labels, distances = g.hnsw.knn_query(q, k=want, num_threads=1, filter=allowed)
                    break
                except RuntimeError as exc:
                    # hnswlib's way of saying the walk found fewer than k eligible items.
                    if "contiguous 2D array" not in str(exc):
                        raise
                    if current >= self.ef_max:
                        return self._exact(g, q, self._eligible_labels(g, mask, excluded), want)
                    current = min(self.ef_max, current * 4)
            labels = labels[0].tolist()
            return SearchResult([g.ids[label] for label in labels], (1.0 - distances[0]).tolist(), plan)

    def _filter_mask(self, g: _Graph, filters: Sequence[Filter]) -> np.ndarray:
        """Labels holding, for every filter, at least one of its values (postings hold live labels only)."""
        mask: np.ndarray | None = None
        for key, values in filters:
            matches = np.zeros(g.capacity, dtype=bool)
            for value in values:
                posting = g.posting_array(key, value)
                if posting is not None:
                    matches[posting] = True
            if mask is None:
                mask = matches
            else:
                mask &= matches
        assert mask is not None
        return mask

    @staticmethod
    def _eligible_labels(g: _Graph, mask: np.ndarray | None, excluded: list[int]) -> np.ndarray:
        if mask is not None:
            return np.flatnonzero(mask)
        labels = np.flatnonzero(g.live)
        if excluded:
            labels = np.setdiff1d(labels, np.asarray(excluded, dtype=np.int64), assume_unique=True)
        return labels

    @staticmethod
    def _exact(g: _Graph, q: np.ndarray, labels: np.ndarray, k: int) -> SearchResult:
        k = min(k, len(labels))
        if k == 0:
            return SearchResult([], [], "exact")
        scores = np.empty(len(labels), dtype=np.float32)
        for start in range(0, len(labels), _EXACT_CHUNK):
            chunk = labels[start : start + _EXACT_CHUNK]
            scores[start : start + len(chunk)] = g.shadow[chunk].astype(np.float32, copy=False) @ q
        # float16 rounding can push a unit vector's self-similarity just past 1.
        np.clip(scores, -1.0, 1.0, out=scores)
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return SearchResult([g.ids[label] for label in labels[top].tolist()], scores[top].tolist(), "exact")

    def vectors_of(self, ids: Iterable[str]) -> tuple[list[str], np.ndarray]:
        """Normalised vectors of the known ids (unknown ones skipped), as (found ids, float32 rows)."""
        with self._lock.read():
            g = self._graph
            found = [i for i in dict.fromkeys(ids) if i in g.label_of]
            labels = np.fromiter((g.label_of[i] for i in found), dtype=np.int64, count=len(found))
            return found, g.shadow[labels].astype(np.float32)

    def __len__(self) -> int:
        return self._graph.live_count

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._graph.label_of

    def stats(self) -> IndexStats:
        with self._lock.read():
            g = self._graph
            return IndexStats(
                item_count=g.live_count,
                dimension=self.dimension,
                capacity=g.capacity,
                tombstone_count=len(g.free),
                metric=METRIC,
                rebuilding=self._rebuild_log is not None,
            )

    # ------------------------------------------------------------ persistence

    def save(self, directory: Path) -> None:
        """Writes the graph, vectors and bookkeeping into `directory` (which must exist) and fsyncs them.

        The caller makes it atomic by writing into a temporary directory and renaming it; writes must
        be held off by the caller too if the snapshot has to match a log position.
        """
        with self._lock.read():
            g = self._graph
            g.hnsw.save_index(str(directory / "graph.hnsw"))
            np.save(directory / "shadow.npy", g.shadow[: g.next_label])
            meta = {
                "format": SNAPSHOT_FORMAT,
                "metric": METRIC,
                "dimension": self.dimension,
                "m": self.m,
                "capacity": g.capacity,
                "next_label": g.next_label,
                "free": g.free,
                "items": [[label, g.ids[label], g.attributes[label]] for label in g.label_of.values()],
            }
        with open(directory / "meta.json", "w", encoding="utf-8") as f:
            json.dump(meta, f, separators=(",", ":"))
        for name in ("graph.hnsw", "shadow.npy", "meta.json"):
            _fsync_file(directory / name)

    def load(self, directory: Path) -> None:
        """Replaces the contents with a snapshot written by `save`.

        Raises:
            SnapshotMismatch: the snapshot was written for another dimension, metric or format.
        """
        with open(directory / "meta.json", encoding="utf-8") as f:
            meta = json.load(f)
        for key, expected in (("format", SNAPSHOT_FORMAT), ("metric", METRIC), ("dimension", self.dimension)):
            if meta.get(key) != expected:
                raise SnapshotMismatch(f"snapshot {directory} has {key}={meta.get(key)!r}, this index needs {expected!r}")
        capacity = max(meta["capacity"], self.initial_capacity)
        hnsw = hnswlib.Index(space="ip", dim=self.dimension)
        hnsw.load_index(str(directory / "graph.hnsw"), max_elements=capacity)
        g = self._empty_graph(capacity, hnsw=hnsw)
        shadow = np.load(directory / "shadow.npy")
        g.shadow[: len(shadow)] = shadow.astype(self.shadow_dtype, copy=False)
        g.next_label = meta["next_label"]
        g.free = list(meta["free"])
        for label, item_id, attributes in meta["items"]:
            g.label_of[item_id] = label
            g.ids[label] = item_id
            g.live[label] = True
            g.index_attributes(label, attributes)
        with self._lock.write():
            self._graph = g

    def _empty_graph(self, capacity: int, hnsw: hnswlib.Index | None = None) -> _Graph:
        if hnsw is None:
            hnsw = hnswlib.Index(space="ip", dim=self.dimension)
            hnsw.init_index(max_elements=capacity, M=self.m, ef_construction=self.ef_construction)
        return _Graph(
            hnsw=hnsw,
            shadow=np.zeros((capacity, self.dimension), dtype=self.shadow_dtype),
            live=np.zeros(capacity, dtype=bool),
            ids=[None] * capacity,
            attributes=[None] * capacity,
        )


class SnapshotMismatch(Exception):
    """A snapshot on disk does not fit the index configured to load it."""


def _clean_attributes(attributes: Attributes | None) -> dict[str, list[str]] | None:
    if not attributes:
        return None
    cleaned = {k: list(dict.fromkeys(v)) for k, v in attributes.items() if v}
    return cleaned or None


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
