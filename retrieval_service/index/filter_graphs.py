"""Per-value filter graphs, built in the background as queries ask for them (`planner.worth_a_graph` says which)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import hnswlib
import numpy as np

from lmrec.filters import AttributeFilter
from retrieval_service.index.graph import COPY_CHUNK, FilterGraph, Graph
from retrieval_service.index.planner import worth_a_graph
from retrieval_service.index.shared import SharedIndex

log = logging.getLogger(__name__)


class FilterGraphBuilder:
    """Builds the graphs queries ask for one at a time in a background thread, first asked first built.

    A build copies the value's rows in chunks under the read lock, so searches and writes go on; the slots
    written meanwhile are caught up under the write lock before the graph is used, and from then on every
    write keeps it current (`writes.set_attributes`).
    """

    def __init__(self, shared: SharedIndex) -> None:
        self._shared = shared
        self._queue: list[tuple[Graph, str, str, int]] = []
        self._mutex = threading.Lock()
        self.thread: threading.Thread | None = None

    def request_missing(self, g: Graph, filters: Sequence[AttributeFilter], which: Sequence[int]) -> None:
        """Asks for the graphs that the known values of `filters[i]`, for each i in `which`, lack."""
        for i in which:
            key = filters[i].key
            for value in filters[i].values:
                if g.attributes.known(key, value) and (key, value) not in g.filter_graphs:
                    self.request(g, key, value, int(np.count_nonzero(g.attributes.bitmap(key, value, g.next_label))))

    def request(self, g: Graph, key: str, value: str, count: int) -> None:
        """Queues a background build of key=value's graph of `count` items if it is worth one and fits the budget."""
        with self._mutex:
            queued = [r for r in self._queue if r[0] is g]
            if any(r[1:3] == (key, value) for r in queued):
                return
            planned = sum(fg.size for fg in g.filter_graphs.values()) + sum(r[3] for r in queued)
            if not worth_a_graph(count, planned, g.live_count, self._shared.config):
                return
            self._queue.append((g, key, value, count))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._build_queued, name="retrieval-filter-graph", daemon=True)
                self.thread.start()

    def wait(self, timeout: float | None = None) -> None:
        thread = self.thread
        if thread is not None:
            thread.join(timeout)

    def _build_queued(self) -> None:
        while True:
            with self._mutex:
                if not self._queue:
                    return
                g, key, value, _ = self._queue[0]
            try:
                self._build(g, key, value)
            finally:
                with self._mutex:
                    self._queue.pop(0)

    def _build(self, g: Graph, key: str, value: str) -> None:
        shared = self._shared
        with shared.lock.read():
            if g is not shared.graph or (key, value) in g.filter_graphs:
                return
            g.attributes.pinned.add((key, value))
            labels = np.flatnonzero(g.attributes.bitmap(key, value, g.next_label))
            # Safe under the read lock: writers, the only other users of the list, are excluded.
            g.touched = []
        try:
            log.info("building the filter graph of %s=%s: %d items", key, value, len(labels))
            hnsw = hnswlib.Index(space="ip", dim=shared.dimension)
            hnsw.init_index(max_elements=max(16, int(len(labels) * 1.25)), M=shared.config.value_graph_m,
                            ef_construction=shared.config.ef_construction)
            for start in range(0, len(labels), COPY_CHUNK):
                chunk = labels[start : start + COPY_CHUNK]
                with shared.lock.read():
                    vectors = g.rows(chunk)
                hnsw.add_items(vectors, chunk, num_threads=1)
            with shared.lock.write():
                if g is not shared.graph:
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
                g.filter_graphs[(key, value)] = FilterGraph(hnsw, size)
            log.info("filter graph of %s=%s ready: %d items", key, value, size)
        finally:
            with shared.lock.write():
                g.touched = None
