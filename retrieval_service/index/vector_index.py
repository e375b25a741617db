"""`VectorIndex`: the index's public face, holding the shared state and handing each job to its module."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmrec.filters import AttributeFilter
from retrieval_service.index import snapshot
from retrieval_service.index.config import IndexConfig
from retrieval_service.index.filter_graphs import FilterGraphBuilder
from retrieval_service.index.graph import METRIC, Attributes, Graph
from retrieval_service.index.planner import clamp_ef
from retrieval_service.index.rebuild import Rebuilder
from retrieval_service.index.search import SearchResult, Searcher
from retrieval_service.index.shared import SharedIndex
from retrieval_service.index.writes import delete_from, prepare_upsert, upsert_into


@dataclass(frozen=True)
class IndexStats:
    item_count: int
    dimension: int
    capacity: int
    tombstone_count: int
    metric: str
    rebuilding: bool


class _Knob:
    """A knob of the index's config read and retuned through the index itself (tests retune a live index)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, index: VectorIndex | None, owner: type | None = None):
        return self if index is None else getattr(index.config, self._name)

    def __set__(self, index: VectorIndex, value) -> None:
        index.config = index.config.replaced(**{self._name: value})


class VectorIndex:
    """Top-k by cosine similarity (higher is better) over items with string ids and attributes.

    Knows hnswlib and numpy, not gRPC. Thread-safe: searches run concurrently, writes exclusively.

    Args:
        dimension: vector length.
        config: the knobs (`IndexConfig.from_settings` in a server); None: the settings' defaults, filter
            graphs off (`IndexConfig.without_settings`).
        auto_rebuild: start background rebuilds on its own (tests turn it off to drive them).
        **knobs: knobs to set on top of `config`, by their settings names.

    The knobs are declared, with their bounds and meaning, in `RetrievalSettings`. Two need figures:
    `walk_cost_per_ef` is what one unit of `ef` costs a graph walk in rows of exact scan from a copy (about
    24 on an AVX-512 EPYC at 384-d; `planner.exact_is_cheaper` has the rule). `filter_graph_m`: measured on
    a 5% value's 50k items of the 1M bench catalogue (one thread, quiet machine), recall@10 / p50: M=16
    0.863 / 0.58 ms at ef=128, 0.923 / 1.09 ms at 256; M=32 0.940 / 1.12 ms at 128, 0.975 / 2.13 ms at 256.
    M=32 buys a little recall per millisecond (0.940 against 0.923 at ~1.1 ms) for 1.7x the build time, and
    doubles the cost of a request at the same ef, so it is an operator's choice, not the default.
    """

    # Retuned on a live index by tests; the planner and the filter-graph builder read them at each use.
    exact_scan_threshold = _Knob()
    walk_cost_per_ef = _Knob()
    filter_graph_share = _Knob()

    def __init__(self, dimension: int, *, config: IndexConfig | None = None, auto_rebuild: bool = True,
                 **knobs) -> None:
        if config is None:
            config = IndexConfig.without_settings(**knobs)
        elif knobs:
            config = config.replaced(**knobs)
        self.dimension = dimension
        self.auto_rebuild = auto_rebuild
        self._shared = SharedIndex(dimension, config)
        self._filter_graphs = FilterGraphBuilder(self._shared)
        self._rebuilder = Rebuilder(self._shared, self._filter_graphs)
        self._searcher = Searcher(self._shared, self._filter_graphs)

    @classmethod
    def from_settings(cls, settings, *, auto_rebuild: bool = True, **overrides) -> VectorIndex:
        """Builds an empty index from `RetrievalSettings` (or anything with the same fields)."""
        config = IndexConfig.from_settings(settings, **overrides)
        return cls(settings.dimension, config=config, auto_rebuild=auto_rebuild)

    @property
    def config(self) -> IndexConfig:
        return self._shared.config

    @config.setter
    def config(self, config: IndexConfig) -> None:
        self._shared.config = config

    @property
    def _graph(self) -> Graph:
        # The graph searches see now; tests look into it.
        return self._shared.graph

    @property
    def _filter_thread(self) -> threading.Thread | None:
        # The background filter-graph builder, if one was ever started; tests check it.
        return self._filter_graphs.thread

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
        ids, vectors, attrs = prepare_upsert(self.dimension, ids, vectors, attributes)
        with self._shared.lock.write():
            upsert_into(self._shared.graph, ids, vectors, attrs, self.config.build_threads)
            self._rebuilder.record(("upsert", (ids, vectors, attrs)))
        return len(ids)

    def delete(self, ids: Iterable[str]) -> int:
        """Removes items; returns how many existed."""
        ids = list(dict.fromkeys(ids))
        with self._shared.lock.write():
            deleted = delete_from(self._shared.graph, ids)
            self._rebuilder.record(("delete", (ids,)))
            start = self.auto_rebuild and self._rebuilder.wanted()
        if start:
            self.start_rebuild()
        return deleted

    # ---------------------------------------------------------------- rebuild

    def start_rebuild(self) -> threading.Thread | None:
        """Starts a background rebuild unless one is running; returns its thread."""
        return self._rebuilder.start()

    def rebuild(self) -> bool:
        """Rebuilds without tombstones now, in this thread (see `Rebuilder.run`); False if one is running."""
        return self._rebuilder.run()

    def wait_for_rebuild(self, timeout: float | None = None) -> None:
        self._rebuilder.wait(timeout)

    def wait_for_filter_graphs(self, timeout: float | None = None) -> None:
        self._filter_graphs.wait(timeout)

    # ----------------------------------------------------------------- reads

    def clamp_ef(self, ef: int | None) -> int:
        return clamp_ef(ef, self.config)

    def search(
        self,
        query: np.ndarray,
        k: int,
        exclude: Iterable[str] = (),
        filters: Sequence[AttributeFilter | tuple[str, Sequence[str]]] = (),
        ef: int | None = None,
    ) -> SearchResult:
        """Top-k live items by cosine similarity, best first; min(k, eligible) of them.

        Eligible: not excluded and passing every filter as `lmrec.filters.matches` means it ((key, values)
        pairs are taken too).

        The plan (exact scan, graph walk, filter-graph walk...) is the planner's (`planner.plan`); the
        result names it.

        Raises:
            ValueError: zero or non-finite query, wrong dimension, k < 1.
        """
        return self._searcher.search(query, k, exclude, filters, ef)

    def vectors_of(self, ids: Iterable[str]) -> tuple[list[str], np.ndarray]:
        """Normalised vectors of the known ids (unknown ones skipped), as (found ids, float32 rows)."""
        ids = list(dict.fromkeys(ids))
        with self._shared.lock.read():
            g = self._shared.graph
            labels = g.ids.get_many(ids)
            known = np.flatnonzero(labels >= 0)
            return [ids[i] for i in known.tolist()], np.array(g.rows(labels[known]), dtype=np.float32)

    def item_ids(self) -> list[str]:
        """Every live item's id, in slot order."""
        with self._shared.lock.read():
            g = self._shared.graph
            return g.ids.ids_at(np.flatnonzero(g.live[: g.next_label]))

    def export(self, ids: Iterable[str]) -> tuple[list[str], np.ndarray, list[Attributes | None]]:
        """What an upsert elsewhere needs to recreate the known `ids` (unknown ones skipped): their ids,
        normalised vectors and attributes."""
        ids = list(dict.fromkeys(ids))
        with self._shared.lock.read():
            g = self._shared.graph
            labels = g.ids.get_many(ids)
            known = np.flatnonzero(labels >= 0)
            labels = labels[known]
            attributes = [g.attributes.attributes_at(label) for label in labels.tolist()]
            return [ids[i] for i in known.tolist()], np.array(g.rows(labels), dtype=np.float32), attributes

    def __len__(self) -> int:
        return self._shared.graph.live_count

    def __contains__(self, item_id: str) -> bool:
        return self._shared.graph.ids.get(item_id) is not None

    def stats(self) -> IndexStats:
        with self._shared.lock.read():
            g = self._shared.graph
            return IndexStats(
                item_count=g.live_count,
                dimension=self.dimension,
                capacity=g.capacity,
                tombstone_count=len(g.free),
                metric=METRIC,
                rebuilding=self._rebuilder.running,
            )

    # ------------------------------------------------------------ persistence

    def save(self, directory: Path) -> None:
        """Writes a snapshot into `directory`, which must exist (see `snapshot.save`)."""
        snapshot.save(self._shared, directory)

    def load(self, directory: Path) -> None:
        """Replaces the contents with a snapshot written by `save` (see `snapshot.load`).

        Raises:
            SnapshotMismatch: the snapshot was written for another dimension, metric or format.
        """
        snapshot.load(self._shared, directory)
