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
from retrieval_service.tables import AttributeTable, IdTable

log = logging.getLogger(__name__)

METRIC = "cosine"
SNAPSHOT_FORMAT = 2
# Rows fetched from hnswlib per get_items call while copying a graph for a rebuild; each call
# holds the read lock, so this bounds how long a writer can wait behind the copy, and the GIL (get_items
# does not release it), so it bounds how long every search of the process stalls: 6,000 rows of 384-d
# hold it ~190 ms, 1,024 rows ~22 ms (2-core EPYC; docs/benchmarks.md, resharding).
_COPY_CHUNK = 1_024
_EXACT_CHUNK = 65_536
# hnswlib's get_items costs ~20 us a row (0.8.0, 384-d) against ~0.2 us for a row of a numpy copy:
# how many copy rows one fetched row is worth to the planner.
_FETCH_ROW_COST = 100

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
class _FilterGraph:
    """An HNSW graph over the items holding one attribute value, labelled by their slots in the main graph.

    Qdrant builds such graphs for payload-indexed values; hnswlib cannot add filter-aware links to one
    graph, so this is a second graph, and a second copy of those items' vectors (~1.8 kB each).
    """

    hnsw: hnswlib.Index
    size: int


@dataclass
class _Graph:
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
    filter_graphs: dict[tuple[str, str], _FilterGraph] = field(default_factory=dict)
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

    def set_attributes(self, labels: np.ndarray, numbers: np.ndarray, vectors: np.ndarray | None) -> None:
        """Gives `labels` new attribute combinations (0 and no vectors for deleted slots), keeping the
        filter graphs equal to their values' items."""
        for (key, value), fg in self.filter_graphs.items():
            was = self.attributes.bitmap(key, value, self.next_label)[labels]
            now = self.attributes.member(key, value)[numbers]
            for label in labels[was & ~now].tolist():
                fg.hnsw.mark_deleted(label)
            if now.any():
                needed = fg.hnsw.get_current_count() + int(np.count_nonzero(now & ~was))
                if needed > fg.hnsw.get_max_elements():
                    fg.hnsw.resize_index(max(needed, 2 * fg.hnsw.get_max_elements()))
                fg.hnsw.add_items(vectors[now], labels[now], num_threads=1)
            fg.size += int(np.count_nonzero(now & ~was)) - int(np.count_nonzero(was & ~now))
        self.attributes.set(labels, numbers)
        if self.touched is not None:
            self.touched.append(labels.copy())


class VectorIndex:
    """Top-k by cosine similarity (higher is better) over items with string ids and attributes.

    Args:
        dimension: vector length.
        m, ef_construction: HNSW graph parameters.
        initial_capacity: slots allocated up front; capacity doubles when full.
        ef_default, ef_min, ef_max: search breadth used when none is asked for, and its bounds.
        exact_scan_threshold: eligible-set size at or below which a search is a brute-force scan.
        walk_cost_per_ef: what one unit of `ef` costs a graph walk, in rows of exact scan from a copy
            (about 24 on an AVX-512 EPYC at 384-d). A filtered walk costs about that times ef / selectivity,
            so a restricted search over more than `exact_scan_threshold` items still scans exactly when
            eligible^2 * row cost < walk_cost_per_ef * ef * live items, where a row read from hnswlib
            (no copy) costs `_FETCH_ROW_COST` rows. 0 turns this rule off.
        tombstone_rebuild_ratio: deleted-but-unreused slots, as a share of all slots, that start a rebuild.
        build_threads: threads hnswlib uses to insert a batch.
        exact_scan_dtype: "none" (exact scans read rows from hnswlib), or a "float16" / "float32" copy of
            the vectors for fast exact scans at 768 / 1536 bytes an item.
        filter_graph_share: items that per-value filter graphs may hold, as a share of live items; 0 turns
            them off. A filter on a value with more than `exact_scan_threshold` items and at most this
            share gets its own graph, built in the background on first use.
        filter_graph_m: hnswlib M of those graphs (default: `m`). Measured on a 5% value's 50k items of
            the 1M bench catalogue (one thread, quiet machine), recall@10 / p50: M=16 0.863 / 0.58 ms at
            ef=128, 0.923 / 1.09 ms at 256; M=32 0.940 / 1.12 ms at 128, 0.975 / 2.13 ms at 256. M=32 buys
            a little recall per millisecond (0.940 against 0.923 at ~1.1 ms) for 1.7x the build time, and
            doubles the cost of a request at the same ef, so it is an operator's choice, not the default.
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
        exact_scan_threshold: int = 500,
        walk_cost_per_ef: float = 24.0,
        tombstone_rebuild_ratio: float = 0.2,
        build_threads: int = 2,
        exact_scan_dtype: str = "none",
        filter_graph_share: float = 0.0,
        filter_graph_m: int | None = None,
        auto_rebuild: bool = True,
    ) -> None:
        if exact_scan_dtype not in ("none", "float16", "float32"):
            raise ValueError(f"exact_scan_dtype must be none, float16 or float32, got {exact_scan_dtype!r}")
        self.shadow_dtype = None if exact_scan_dtype == "none" else np.dtype(exact_scan_dtype)
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
        self.filter_graph_share = filter_graph_share
        self.filter_graph_m = filter_graph_m or m
        self.auto_rebuild = auto_rebuild
        self._lock = ReadersWriterLock()
        self._ef = SharedSetting()
        self._graph = self._empty_graph(initial_capacity)
        # Writes applied while a rebuild copies the graph; replayed onto the new graph before the swap.
        self._rebuild_log: list[tuple[str, tuple]] | None = None
        self._rebuild_thread: threading.Thread | None = None
        self._filter_queue: list[tuple[_Graph, str, str, int]] = []
        self._filter_mutex = threading.Lock()
        self._filter_thread: threading.Thread | None = None

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
            filter_graph_share=settings.filter_graph_share,
            filter_graph_m=settings.filter_graph_m,
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
            ValueError: lengths disagree, wrong dimension, a zero/non-finite vector, or an id ending in NUL.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(ids), self.dimension):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dimension}), got {vectors.shape}")
        if attributes is not None and len(attributes) != len(ids):
            raise ValueError("attributes must have one entry per id")
        if any(not item_id or item_id.endswith("\0") for item_id in ids):
            raise ValueError("item ids must be non-empty and must not end in a NUL character")
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
        labels = g.ids.get_many(ids)
        new = np.flatnonzero(labels < 0)
        fresh_needed = max(0, len(new) - len(g.free))
        if g.next_label + fresh_needed > g.capacity:
            g.grow(max(2 * g.capacity, g.next_label + fresh_needed))
        free = list(g.free)
        next_label = g.next_label
        for i in new.tolist():
            if free:
                labels[i] = free.pop()
            else:
                labels[i] = next_label
                next_label += 1
        # hnswlib first: if it fails, the bookkeeping still describes the graph.
        g.hnsw.add_items(vectors, labels, num_threads=self.build_threads)
        g.free = free
        g.next_label = next_label
        for i in new.tolist():
            g.ids.add(ids[i], int(labels[i]))
        g.live[labels] = True
        if g.shadow is not None:
            g.shadow[labels] = vectors
        numbers = np.fromiter((g.attributes.number(a) for a in attrs), dtype=np.int32, count=len(attrs))
        g.set_attributes(labels, numbers, vectors)

    @staticmethod
    def _delete_from(g: _Graph, ids: list[str]) -> int:
        labels = g.ids.get_many(ids)
        known = np.flatnonzero(labels >= 0)
        labels = labels[known]
        for i, label in zip(known.tolist(), labels.tolist()):
            g.hnsw.mark_deleted(label)
            g.ids.remove(ids[i], label)
            g.free.append(label)
        g.live[labels] = False
        g.set_attributes(labels, np.zeros(len(labels), dtype=np.int32), None)
        return len(labels)

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
        graph under the write lock just before the swap. Filter graphs are labelled by the old graph's
        slots, so they cannot be carried over: the values that had one get theirs rebuilt in the
        background right after the swap (filtered queries walk the main graph meanwhile). Returns False
        if another rebuild is running.
        """
        with self._lock.read():
            if self._rebuild_log is not None:
                return False
            old = self._graph
            labels = np.flatnonzero(old.live)
            names = old.ids.names[labels]
            numbers = old.attributes.combo[labels]
            # Safe under the read lock: writers, the only other users of the log, are excluded.
            self._rebuild_log = []
        try:
            log.info("rebuilding index: %d live items, %d tombstones", len(labels), len(old.free))
            fresh = self._empty_graph(max(self.initial_capacity, int(len(labels) * 1.25) + 1))
            for start in range(0, len(labels), _COPY_CHUNK):
                chunk = np.arange(start, min(start + _COPY_CHUNK, len(labels)))
                with self._lock.read():
                    # Items deleted or re-assigned since the copy began are skipped: the log replays them.
                    still = chunk[old.ids.names[labels[chunk]] == names[chunk]]
                    if not len(still):
                        continue
                    vectors = old.rows(labels[still])
                    attrs = [old.attributes.combos[n] for n in numbers[still].tolist()]
                ids = [name.decode("utf-8") for name in names[still].tolist()]
                self._upsert_into(fresh, ids, normalize(vectors), attrs)
            with self._lock.write():
                for op, args in self._rebuild_log:
                    if op == "upsert":
                        self._upsert_into(fresh, *args)
                    else:
                        self._delete_from(fresh, *args)
                self._graph = fresh
                had_graphs = [(key, value, int(np.count_nonzero(fresh.attributes.bitmap(key, value, fresh.next_label))))
                              for key, value in old.filter_graphs]
            log.info("rebuild swapped in: %d items", fresh.live_count)
            for key, value, count in had_graphs:
                self._request_filter_graph(fresh, key, value, count)
            return True
        finally:
            with self._lock.write():
                self._rebuild_log = None

    def wait_for_rebuild(self, timeout: float | None = None) -> None:
        thread = self._rebuild_thread
        if thread is not None:
            thread.join(timeout)

    # ---------------------------------------------------------- filter graphs

    def _request_filter_graph(self, g: _Graph, key: str, value: str, count: int) -> None:
        """Queues a background build of key=value's graph if it is worth one and fits the budget."""
        if count <= self.exact_scan_threshold:
            return
        budget = self.filter_graph_share * g.live_count
        with self._filter_mutex:
            queued = [r for r in self._filter_queue if r[0] is g]
            if any(r[1:3] == (key, value) for r in queued):
                return
            planned = sum(fg.size for fg in g.filter_graphs.values()) + sum(r[3] for r in queued)
            if planned + count > budget:
                return
            self._filter_queue.append((g, key, value, count))
            if self._filter_thread is None or not self._filter_thread.is_alive():
                self._filter_thread = threading.Thread(target=self._build_filter_graphs, name="retrieval-filter-graph", daemon=True)
                self._filter_thread.start()

    def _build_filter_graphs(self) -> None:
        while True:
            with self._filter_mutex:
                if not self._filter_queue:
                    return
                g, key, value, _ = self._filter_queue[0]
            try:
                self._build_filter_graph(g, key, value)
            finally:
                with self._filter_mutex:
                    self._filter_queue.pop(0)

    def _build_filter_graph(self, g: _Graph, key: str, value: str) -> None:
        with self._lock.read():
            if g is not self._graph or (key, value) in g.filter_graphs:
                return
            g.attributes.pinned.add((key, value))
            labels = np.flatnonzero(g.attributes.bitmap(key, value, g.next_label))
            # Safe under the read lock: writers, the only other users of the list, are excluded.
            g.touched = []
        try:
            log.info("building the filter graph of %s=%s: %d items", key, value, len(labels))
            hnsw = hnswlib.Index(space="ip", dim=self.dimension)
            hnsw.init_index(max_elements=max(16, int(len(labels) * 1.25)), M=self.filter_graph_m,
                            ef_construction=self.ef_construction)
            for start in range(0, len(labels), _COPY_CHUNK):
                chunk = labels[start : start + _COPY_CHUNK]
                with self._lock.read():
                    vectors = g.rows(chunk)
                hnsw.add_items(vectors, chunk, num_threads=1)
            with self._lock.write():
                if g is not self._graph:
                    return
                # Catch up on the slots written during the build, then keep it current with every write.
                touched = np.unique(np.concatenate(g.touched)) if g.touched else np.empty(0, np.int64)
                member = g.attributes.bitmap(key, value, g.next_label)[touched]
                for label in touched[~member & np.isin(touched, labels)].tolist():
                    hnsw.mark_deleted(label)
                again = touched[member]
                if len(again):
                    hnsw.resize_index(max(hnsw.get_max_elements(), hnsw.get_current_count() + len(again)))
                    hnsw.add_items(g.rows(again), again, num_threads=1)
                size = int(np.count_nonzero(g.attributes.bitmap(key, value, g.next_label)))
                g.filter_graphs[(key, value)] = _FilterGraph(hnsw, size)
            log.info("filter graph of %s=%s ready: %d items", key, value, size)
        finally:
            with self._lock.write():
                g.touched = None

    def wait_for_filter_graphs(self, timeout: float | None = None) -> None:
        thread = self._filter_thread
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
        (see `walk_cost_per_ef`); a walk of the filter graphs of a filter's values when they are built
        (tried first for a single filter, minus any excluded ids, with no label mask);
        for exclusions alone, an unfiltered walk's candidates minus the excluded when enough survive;
        otherwise HNSW (with a label filter when anything is excluded or filtered), widening `ef` and
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
        exclude = set(exclude)
        with self._lock.read():
            g = self._graph
            if len(filters) == 1 and g.filter_graphs:
                found = self._value_graphs_then_drop(g, q, k, ef, filters[0], exclude)
                if found is not None:
                    return found
            walked_then_dropped = False
            if exclude and not filters:
                # At least this many items are eligible. When even that many make a graph walk the plan,
                # the walk's candidates are checked against the ids themselves: resolving the ids to slots
                # first costs ~0.4 ms at 1M for 500 ids (binary searches into columns the walk has just
                # pushed out of the CPU caches), more than the walk at ef=64.
                at_least = g.live_count - len(exclude)
                if at_least >= k and not self._exact_is_cheaper(g, at_least, ef, k):
                    walked_then_dropped = True
                    found = self._walk_then_drop(g, q, k, ef, exclude)
                    if found is not None:
                        return found
            excluded = g.ids.get_many(list(exclude), verify=False)
            excluded = excluded[excluded >= 0]
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
            restricted = bool(filters) or len(excluded) > 0
            if eligible <= self.exact_scan_threshold or (restricted and self._exact_is_cheaper(g, eligible, ef, want)):
                return self._exact(g, q, self._eligible_labels(g, mask, excluded), want)
            if restricted and mask is None:
                # The same walk with the same want (eligible >= at_least >= k) already came back crowded.
                found = None if walked_then_dropped else self._walk_then_drop(g, q, want, ef, exclude)
                if found is not None:
                    return found
                mask = g.live.copy()
                mask[excluded] = False
            # memoryview.__getitem__ is a C callable: hnswlib calls it per candidate without a Python frame.
            allowed = memoryview(mask).__getitem__ if restricted else None
            if filters:
                result = self._search_filter_graphs(g, q, want, ef, filters, excluded, allowed)
                if result is not None:
                    return result
            plan = "hnsw_filtered" if restricted else "hnsw"
            current = ef
            while True:
                try:
                    labels, distances = self._walk(g.hnsw, q, want, current, allowed)
                    break
                except RuntimeError as exc:
                    # hnswlib's way of saying the walk found fewer than k eligible items.
                    if "contiguous 2D array" not in str(exc):
                        raise
                    if current >= self.ef_max:
                        return self._exact(g, q, self._eligible_labels(g, mask, excluded), want)
                    current = min(self.ef_max, current * 4)
            return SearchResult(g.ids.ids_at(labels), (1.0 - distances).tolist(), plan)

    def _exact_is_cheaper(self, g: _Graph, eligible: int, ef: int, want: int) -> bool:
        """Whether scanning `eligible` items beats a filtered walk (or the set is below the scan threshold)."""
        row_cost = 1 if g.shadow is not None else _FETCH_ROW_COST
        return eligible <= self.exact_scan_threshold or (
            eligible * eligible * row_cost < self.walk_cost_per_ef * max(ef, want) * g.live_count)

    def _walk_then_drop(self, g: _Graph, q: np.ndarray, want: int, ef: int, excluded: set[str]) -> SearchResult | None:
        """Exclusions only: an unfiltered walk that returns all its `ef` candidates, minus the excluded ids.

        A walk costs what its ef costs whatever k it returns, and a label filter makes hnswlib call back
        into Python for every node it visits (1.4-1.5x the walk at 1M with 500 excluded ids). When at least
        `want` candidates survive, they are the walk's best eligible ones; otherwise (the excluded crowd the
        neighbourhood, e.g. a user's history around the query) None, and the filtered walk runs instead.
        """
        n = min(max(ef, want), g.live_count)
        try:
            labels, distances = self._walk(g.hnsw, q, n, max(ef, n), None)
        except RuntimeError as exc:  # fewer than n reachable live items: leave it to the filtered walk
            if "contiguous 2D array" not in str(exc):
                raise
            return None
        return self._drop_excluded(g, labels, distances, excluded, want, "hnsw_post_filter")

    @staticmethod
    def _drop_excluded(g: _Graph, labels: np.ndarray, distances: np.ndarray, excluded: set[str], want: int,
                       plan: str) -> SearchResult | None:
        """The first `want` walk candidates whose ids are not excluded, or None when fewer survive."""
        if not excluded:
            labels, distances = labels[:want], distances[:want]
        ids = g.ids.ids_at(labels)
        keep = [i for i, item_id in enumerate(ids) if item_id not in excluded][:want]
        if len(keep) < want:
            return None
        return SearchResult([ids[i] for i in keep], (1.0 - distances[keep]).tolist(), plan)

    def _walk(self, hnsw: hnswlib.Index, q: np.ndarray, k: int, ef: int, allowed) -> tuple[np.ndarray, np.ndarray]:
        with self._ef.hold(ef):
            # Every holder sets the same value, so concurrent set_ef calls agree.
            hnsw.set_ef(ef)
            labels, distances = hnsw.knn_query(q, k=k, num_threads=1, filter=allowed)
        return labels[0], distances[0]

    def _value_graphs_then_drop(
        self, g: _Graph, q: np.ndarray, k: int, ef: int, flt: Filter, exclude: set[str]
    ) -> SearchResult | None:
        """One filter whose values all have built graphs: their walks' candidates minus the excluded ids.

        Needs no label mask, so it skips what the general plan pays before any walk: a mask over every
        slot of the index per call and, with exclusions, resolving the ids to slots. At 1M items that
        was most of the 5% filter's extra cost: its p50 gap to unfiltered fell from 0.44 to 0.11 ms at
        ef=128 (docs/benchmarks/retrieval.md).
        None when the plan is not this one (a graph missing, a set small enough to scan) or when fewer
        than k candidates survive; the general plan then runs.
        """
        key, values = flt
        graphs = [g.filter_graphs.get((key, v)) for v in values if g.attributes.known(key, v)]
        if not graphs or not all(graphs):
            return None
        # Multi-valued items can sit in several graphs, so the sizes bound the eligible set from both sides.
        at_most = sum(fg.size for fg in graphs)
        at_least = max(fg.size for fg in graphs) - len(exclude)
        if at_least < k or self._exact_is_cheaper(g, at_most, ef, k):
            return None
        found = self._walk_value_graphs(g, q, graphs, max(ef, k), ef, None)
        if found is None:
            return None
        return self._drop_excluded(g, *found, exclude, k, "hnsw_value_graph")

    def _search_filter_graphs(
        self, g: _Graph, q: np.ndarray, want: int, ef: int, filters: Sequence[Filter], excluded: np.ndarray, allowed
    ) -> SearchResult | None:
        """Walks the filter graphs of one filter's values, or returns None when that is not possible."""
        if not g.filter_graphs and self.filter_graph_share <= 0:
            return None
        chosen = None
        for key, values in filters:
            graphs = [g.filter_graphs.get((key, v)) for v in values if g.attributes.known(key, v)]
            if graphs and all(graphs):
                chosen = graphs
                break
            for value in values:
                if g.attributes.known(key, value) and (key, value) not in g.filter_graphs:
                    count = int(np.count_nonzero(g.attributes.bitmap(key, value, g.next_label)))
                    self._request_filter_graph(g, key, value, count)
        if chosen is None:
            return None
        # Only the chosen filter is implied by walking its graphs; anything else needs the label filter.
        narrower = len(filters) > 1 or len(excluded) > 0
        found = self._walk_value_graphs(g, q, chosen, want, ef, allowed if narrower else None)
        if found is None or len(found[0]) < want:
            return None
        labels, distances = found
        return SearchResult(g.ids.ids_at(labels[:want]), (1.0 - distances[:want]).tolist(), "hnsw_value_graph")

    def _walk_value_graphs(
        self, g: _Graph, q: np.ndarray, graphs: list[_FilterGraph], n: int, ef: int, allowed
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Up to `n` candidates from each graph, merged best first with each label once; None when a walk
        finds fewer than it was asked for (hnswlib raises) or no graph holds anything."""
        found_labels, found_distances = [], []
        for fg in graphs:
            if fg.size == 0:
                continue
            try:
                labels, distances = self._walk(fg.hnsw, q, min(n, fg.size), max(ef, min(n, fg.size)), allowed)
            except RuntimeError as exc:
                if "contiguous 2D array" not in str(exc):
                    raise
                return None
            found_labels.append(labels)
            found_distances.append(distances)
        if not found_labels:
            return None
        labels, distances = np.concatenate(found_labels), np.concatenate(found_distances)
        order = np.argsort(distances, kind="stable")
        labels, distances = labels[order], distances[order]
        # A multi-valued item can be in several of the graphs: keep its first (best) hit.
        _, first = np.unique(labels, return_index=True)
        keep = np.sort(first)
        return labels[keep], distances[keep]

    @staticmethod
    def _filter_mask(g: _Graph, filters: Sequence[Filter]) -> np.ndarray:
        """Labels holding, for every filter, at least one of its values (bitmaps hold live labels only)."""
        mask: np.ndarray | None = None
        for key, values in filters:
            matches = np.zeros(g.capacity, dtype=bool)
            for value in values:
                if g.attributes.known(key, value):
                    matches |= g.attributes.bitmap(key, value, g.next_label)
            if mask is None:
                mask = matches
            else:
                mask &= matches
        assert mask is not None
        return mask

    @staticmethod
    def _eligible_labels(g: _Graph, mask: np.ndarray | None, excluded: np.ndarray) -> np.ndarray:
        if mask is not None:
            return np.flatnonzero(mask)
        labels = np.flatnonzero(g.live)
        if len(excluded):
            labels = np.setdiff1d(labels, excluded, assume_unique=True)
        return labels

    @staticmethod
    def _exact(g: _Graph, q: np.ndarray, labels: np.ndarray, k: int) -> SearchResult:
        k = min(k, len(labels))
        if k == 0:
            return SearchResult([], [], "exact")
        scores = np.empty(len(labels), dtype=np.float32)
        for start in range(0, len(labels), _EXACT_CHUNK):
            chunk = labels[start : start + _EXACT_CHUNK]
            scores[start : start + len(chunk)] = g.rows(chunk) @ q
        # float16 rounding can push a unit vector's self-similarity just past 1.
        np.clip(scores, -1.0, 1.0, out=scores)
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return SearchResult(g.ids.ids_at(labels[top]), scores[top].tolist(), "exact")

    def vectors_of(self, ids: Iterable[str]) -> tuple[list[str], np.ndarray]:
        """Normalised vectors of the known ids (unknown ones skipped), as (found ids, float32 rows)."""
        ids = list(dict.fromkeys(ids))
        with self._lock.read():
            g = self._graph
            labels = g.ids.get_many(ids)
            known = np.flatnonzero(labels >= 0)
            return [ids[i] for i in known.tolist()], np.array(g.rows(labels[known]), dtype=np.float32)

    def item_ids(self) -> list[str]:
        """Every live item's id, in slot order."""
        with self._lock.read():
            g = self._graph
            return g.ids.ids_at(np.flatnonzero(g.live[: g.next_label]))

    def export(self, ids: Iterable[str]) -> tuple[list[str], np.ndarray, list[Attributes | None]]:
        """What an upsert elsewhere needs to recreate the known `ids` (unknown ones skipped): their ids,
        normalised vectors and attributes."""
        ids = list(dict.fromkeys(ids))
        with self._lock.read():
            g = self._graph
            labels = g.ids.get_many(ids)
            known = np.flatnonzero(labels >= 0)
            labels = labels[known]
            attributes = [g.attributes.attributes_at(label) for label in labels.tolist()]
            return [ids[i] for i in known.tolist()], np.array(g.rows(labels), dtype=np.float32), attributes

    def __len__(self) -> int:
        return self._graph.live_count

    def __contains__(self, item_id: str) -> bool:
        return self._graph.ids.get(item_id) is not None

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
        """Writes the graph and bookkeeping into `directory` (which must exist) and fsyncs them.

        The caller makes it atomic by writing into a temporary directory and renaming it; writes must
        be held off by the caller too if the snapshot has to match a log position. Filter graphs are
        saved beside the main graph (at 1M items a value's graph takes minutes to rebuild, and filtered
        queries walk the main graph slowly until it is back); the exact-scan copy is read back from it.
        """
        files = ["graph.hnsw", "slots.npz", "meta.json"]
        with self._lock.read():
            g = self._graph
            g.hnsw.save_index(str(directory / "graph.hnsw"))
            filter_graphs = []
            for n, ((key, value), fg) in enumerate(sorted(g.filter_graphs.items(), key=lambda kv: kv[0])):
                name = f"filter-{n}.hnsw"
                fg.hnsw.save_index(str(directory / name))
                filter_graphs.append({"key": key, "value": value, "file": name, "size": fg.size, "m": fg.hnsw.M})
                files.append(name)
            used = g.next_label
            np.savez(
                directory / "slots.npz",
                names=g.ids.names[:used],
                live=g.live[:used],
                combo=g.attributes.combo[:used],
                free=np.asarray(g.free, dtype=np.int64),
            )
            meta = {
                "format": SNAPSHOT_FORMAT,
                "metric": METRIC,
                "dimension": self.dimension,
                "m": self.m,
                "capacity": g.capacity,
                "next_label": used,
                "combos": g.attributes.combos,
                "filter_graphs": filter_graphs,
            }
        with open(directory / "meta.json", "w", encoding="utf-8") as f:
            json.dump(meta, f, separators=(",", ":"))
        for name in files:
            _fsync_file(directory / name)

    def load(self, directory: Path) -> None:
        """Replaces the contents with a snapshot written by `save`.

        Reads format 1 (before the numpy tables) too; its float16 copy, if any, is not needed.

        Raises:
            SnapshotMismatch: the snapshot was written for another dimension, metric or format.
        """
        with open(directory / "meta.json", encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") not in (1, SNAPSHOT_FORMAT):
            raise SnapshotMismatch(f"snapshot {directory} has format={meta.get('format')!r}, this index reads 1 and {SNAPSHOT_FORMAT}")
        for key, expected in (("metric", METRIC), ("dimension", self.dimension)):
            if meta.get(key) != expected:
                raise SnapshotMismatch(f"snapshot {directory} has {key}={meta.get(key)!r}, this index needs {expected!r}")
        capacity = max(meta["capacity"], self.initial_capacity)
        hnsw = hnswlib.Index(space="ip", dim=self.dimension)
        hnsw.load_index(str(directory / "graph.hnsw"), max_elements=capacity)
        g = self._empty_graph(capacity, hnsw=hnsw)
        g.next_label = meta["next_label"]
        if meta["format"] == 1:
            # Written before the numpy tables: one [label, id, attributes] entry per live item.
            g.free = list(meta["free"])
            labels = np.array([label for label, _, _ in meta["items"]], dtype=np.int64)
            for label, item_id, _ in meta["items"]:
                g.ids.add(item_id, label)
            numbers = np.array([g.attributes.number(_clean_attributes(a)) for _, _, a in meta["items"]], np.int32)
            g.live[labels] = True
            g.attributes.combo[labels] = numbers
        else:
            with np.load(directory / "slots.npz") as slots:
                names, live, combo, free = slots["names"], slots["live"], slots["combo"], slots["free"]
            g.free = free.tolist()
            for attributes in meta["combos"][1:]:
                g.attributes.number(attributes)
            g.attributes.combo[: g.next_label] = combo
            g.live[: g.next_label] = live
            for label in np.flatnonzero(live).tolist():
                g.ids.add(names[label].decode("utf-8"), label)
        if g.shadow is not None:
            labels = np.flatnonzero(g.live)
            for start in range(0, len(labels), _COPY_CHUNK):
                chunk = labels[start : start + _COPY_CHUNK]
                g.shadow[chunk] = hnsw.get_items(chunk, return_type="numpy")
        self._load_filter_graphs(directory, meta.get("filter_graphs", []), g)
        with self._lock.write():
            self._graph = g

    def _load_filter_graphs(self, directory: Path, saved: list[dict], g: _Graph) -> None:
        """Takes back the saved filter graphs this configuration would build the same way; the others
        are dropped and, if queries ask for them, rebuilt."""
        if self.filter_graph_share <= 0:
            return
        for entry in saved:
            if entry["m"] != self.filter_graph_m or not (directory / entry["file"]).is_file():
                continue
            fg = hnswlib.Index(space="ip", dim=self.dimension)
            fg.load_index(str(directory / entry["file"]))
            g.attributes.pinned.add((entry["key"], entry["value"]))
            g.filter_graphs[(entry["key"], entry["value"])] = _FilterGraph(fg, entry["size"])

    def _empty_graph(self, capacity: int, hnsw: hnswlib.Index | None = None) -> _Graph:
        if hnsw is None:
            hnsw = hnswlib.Index(space="ip", dim=self.dimension)
            hnsw.init_index(max_elements=capacity, M=self.m, ef_construction=self.ef_construction)
        return _Graph(
            hnsw=hnsw,
            live=np.zeros(capacity, dtype=bool),
            ids=IdTable(capacity),
            attributes=AttributeTable(capacity),
            shadow=None if self.shadow_dtype is None else np.zeros((capacity, self.dimension), self.shadow_dtype),
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
