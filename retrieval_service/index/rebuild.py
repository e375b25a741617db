"""Rebuilds: a compact graph of the live items, built while searches and writes go on, with the writes made
meanwhile replayed onto it before it is swapped in."""

from __future__ import annotations

import logging
import threading

import numpy as np

from retrieval_service.index.filter_graphs import FilterGraphBuilder
from retrieval_service.index.graph import COPY_CHUNK, new_graph, normalize
from retrieval_service.index.shared import SharedIndex
from retrieval_service.index.writes import Write, apply, upsert_into

log = logging.getLogger(__name__)


def tombstones_call_for_rebuild(tombstones: int, used_slots: int, ratio: float) -> bool:
    """Whether deleted-but-unreused slots have reached `ratio` of the slots in use."""
    return tombstones > 0 and tombstones >= ratio * max(used_slots, 1)


class Rebuilder:
    """Runs one rebuild at a time, in the caller's thread or a background one."""

    def __init__(self, shared: SharedIndex, filter_graphs: FilterGraphBuilder) -> None:
        self._shared = shared
        self._filter_graphs = filter_graphs
        # Writes applied while a rebuild copies the graph; replayed onto the new graph before the swap.
        self._log: list[Write] | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._log is not None

    def record(self, write: Write) -> None:
        """Keeps a write for the replay if a rebuild is copying; writers call it under the write lock."""
        if self._log is not None:
            self._log.append(write)

    def wanted(self) -> bool:
        """Whether the current graph's tombstones call for a rebuild and none is running (under the write lock)."""
        g = self._shared.graph
        ratio = self._shared.config.tombstone_rebuild_ratio
        return self._log is None and tombstones_call_for_rebuild(len(g.free), g.next_label, ratio)

    def start(self) -> threading.Thread | None:
        """Starts a background rebuild unless one is running; returns its thread."""
        with self._shared.lock.read():
            if self._thread is not None and self._thread.is_alive():
                return None
            thread = threading.Thread(target=self.run, name="retrieval-rebuild", daemon=True)
            self._thread = thread
        thread.start()
        return thread

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def run(self) -> bool:
        """Builds a compact graph of the live items, without tombstones, and swaps it in.

        Searches and writes go on meanwhile; writes made during the build are replayed onto the new
        graph under the write lock just before the swap. Filter graphs are labelled by the old graph's
        slots, so they cannot be carried over: the values that had one get theirs rebuilt in the
        background right after the swap (filtered queries walk the main graph meanwhile). Returns False
        if another rebuild is running.
        """
        shared = self._shared
        with shared.lock.read():
            if self._log is not None:
                return False
            old = shared.graph
            labels = np.flatnonzero(old.live)
            names = old.ids.names[labels]
            numbers = old.attributes.combo[labels]
            # Safe under the read lock: writers, the only other users of the log, are excluded.
            self._log = []
        try:
            log.info("rebuilding index: %d live items, %d tombstones", len(labels), len(old.free))
            config = shared.config
            fresh = new_graph(shared.dimension, config, max(config.initial_capacity, int(len(labels) * 1.25) + 1))
            for start in range(0, len(labels), COPY_CHUNK):
                chunk = np.arange(start, min(start + COPY_CHUNK, len(labels)))
                with shared.lock.read():
                    # Items deleted or re-assigned since the copy began are skipped: the log replays them.
                    still = chunk[old.ids.names[labels[chunk]] == names[chunk]]
                    if not len(still):
                        continue
                    vectors = old.rows(labels[still])
                    attrs = [old.attributes.combos[n] for n in numbers[still].tolist()]
                ids = [name.decode("utf-8") for name in names[still].tolist()]
                upsert_into(fresh, ids, normalize(vectors), attrs, config.build_threads)
            with shared.lock.write():
                for write in self._log:
                    apply(fresh, write, shared.config.build_threads)
                shared.graph = fresh
                had_graphs = [(key, value, int(np.count_nonzero(fresh.attributes.bitmap(key, value, fresh.next_label))))
                              for key, value in old.filter_graphs]
            log.info("rebuild swapped in: %d items", fresh.live_count)
            for key, value, count in had_graphs:
                self._filter_graphs.request(fresh, key, value, count)
            return True
        finally:
            with shared.lock.write():
                self._log = None
