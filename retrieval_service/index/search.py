"""Searches: gathers the counts the planner needs, then runs its plans against hnswlib and numpy."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import hnswlib
import numpy as np

from lmrec.filters import AttributeFilter, as_filters
from retrieval_service.index.filter_graphs import FilterGraphBuilder
from retrieval_service.index.graph import FilterGraph, Graph, normalize
from retrieval_service.index.planner import Eligible, IndexCounts, Kind, Plan, Query, clamp_ef, plan, shortcut
from retrieval_service.index.shared import SharedIndex
from retrieval_service.locks import SharedSetting

_EXACT_CHUNK = 65_536


@dataclass(frozen=True)
class SearchResult:
    ids: list[str]
    scores: list[float]
    # "hnsw", "hnsw_filtered", "hnsw_post_filter", "hnsw_value_graph" or "exact" (planner.REPORTED).
    plan: str


class _ShortWalk(Exception):
    """hnswlib found fewer than the k it was asked for (it raises a RuntimeError saying so)."""


@dataclass
class _Target:
    """One query against one graph: what the plans of a search share."""

    g: Graph
    q: np.ndarray
    exclude: set[str]
    graphs: list[list[FilterGraph | None]]  # per filter, the graph of each value the index knows
    excluded: np.ndarray | None = None  # slots of the excluded ids, once resolved
    mask: np.ndarray | None = None  # eligible slots, once built

    def allowed(self):
        """The label filter hnswlib calls per candidate, from the mask (built for exclusions alone on first use)."""
        if self.mask is None:
            self.mask = self.g.live.copy()
            self.mask[self.excluded] = False
        # memoryview.__getitem__ is a C callable: hnswlib calls it per candidate without a Python frame.
        return memoryview(self.mask).__getitem__

    def eligible_labels(self) -> np.ndarray:
        if self.mask is not None:
            return np.flatnonzero(self.mask)
        labels = np.flatnonzero(self.g.live)
        if len(self.excluded):
            labels = np.setdiff1d(labels, self.excluded, assume_unique=True)
        return labels


class Searcher:
    """Top-k searches of the shared graph, as many at once as come, under the read lock."""

    def __init__(self, shared: SharedIndex, filter_graphs: FilterGraphBuilder) -> None:
        self._shared = shared
        self._filter_graphs = filter_graphs
        self._ef = SharedSetting()

    def search(self, query: np.ndarray, k: int, exclude: Iterable[str],
               filters: Sequence[AttributeFilter | tuple[str, Sequence[str]]], ef: int | None) -> SearchResult:
        """See `VectorIndex.search`."""
        if k < 1:
            raise ValueError("k must be at least 1")
        shared = self._shared
        query = np.asarray(query, dtype=np.float32)
        if query.shape != (shared.dimension,):
            raise ValueError(f"query must have {shared.dimension} dimensions, got {query.shape}")
        q = normalize(query)[0]
        config = shared.config
        exclude = set(exclude)
        filters = as_filters(filters)
        asked = Query(k, clamp_ef(ef, config), len(filters), len(exclude))
        with shared.lock.read():
            g = shared.graph
            t = _Target(g, q, exclude, [g.value_graphs(f.key, f.values) for f in filters])
            sizes = tuple(tuple([None if fg is None else fg.size for fg in graphs]) for graphs in t.graphs)
            counts = IndexCounts(g.live_count, g.shadow is not None, sizes)
            tried = shortcut(asked, counts, config)
            if tried is not None:
                found = self._run(t, tried)
                if found is not None:
                    return found
            excluded = g.ids.get_many(list(t.exclude), verify=False)
            t.excluded = excluded[excluded >= 0]
            if filters:
                t.mask = _filter_mask(g, filters)
                t.mask[t.excluded] = False
                eligible = int(np.count_nonzero(t.mask))
            else:
                eligible = g.live_count - len(t.excluded)
            chosen = plan(asked, counts, Eligible(eligible, len(t.excluded)), config, tried)
            self._filter_graphs.request_missing(g, filters, chosen.build_graphs_for)
            step: Plan | None = chosen
            while step is not None:
                found = self._run(t, step)
                if found is not None:
                    return found
                step = step.fallback
        raise AssertionError(f"every plan came up short, even its exact scan: {chosen}")

    def _run(self, t: _Target, p: Plan) -> SearchResult | None:
        """The plan's result, or None when it came up short."""
        if p.kind is Kind.NOTHING:
            return SearchResult([], [], p.name)
        if p.kind is Kind.EXACT:
            return _exact(t.g, t.q, t.eligible_labels(), p.want)
        allowed = t.allowed() if p.label_filter else None
        if p.kind in (Kind.VALUE_GRAPHS, Kind.VALUE_GRAPHS_THEN_DROP):
            found = self._walk_value_graphs(t.q, t.graphs[p.graphs_of], p.candidates, p.efs[0], allowed)
            if found is None:
                return None
            labels, distances = found
        else:
            for ef in p.efs:
                try:
                    labels, distances = self._walk(t.g.hnsw, t.q, p.candidates, ef, allowed)
                    break
                except _ShortWalk:
                    continue
            else:
                return None
        if p.kind in (Kind.WALK_THEN_DROP, Kind.VALUE_GRAPHS_THEN_DROP):
            return _drop_excluded(t.g, labels, distances, t.exclude, p.want, p.name)
        if len(labels) < p.want:
            return None
        if len(labels) > p.want:
            labels, distances = labels[: p.want], distances[: p.want]
        return SearchResult(t.g.ids.ids_at(labels), (1.0 - distances).tolist(), p.name)

    def _walk(self, hnsw: hnswlib.Index, q: np.ndarray, k: int, ef: int, allowed) -> tuple[np.ndarray, np.ndarray]:
        with self._ef.hold(ef):
            # Every holder sets the same value, so concurrent set_ef calls agree.
            hnsw.set_ef(ef)
            try:
                labels, distances = hnsw.knn_query(q, k=k, num_threads=1, filter=allowed)
            except RuntimeError as exc:
                if "contiguous 2D array" not in str(exc):
                    raise
                raise _ShortWalk from exc
        return labels[0], distances[0]

    def _walk_value_graphs(
        self, q: np.ndarray, graphs: list[FilterGraph], n: int, ef: int, allowed
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Up to `n` candidates from each graph, merged best first with each label once; None when a walk
        finds fewer than it was asked for or no graph holds anything."""
        found_labels, found_distances = [], []
        for fg in graphs:
            if fg.size == 0:
                continue
            try:
                labels, distances = self._walk(fg.hnsw, q, min(n, fg.size), max(ef, min(n, fg.size)), allowed)
            except _ShortWalk:
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


def _drop_excluded(g: Graph, labels: np.ndarray, distances: np.ndarray, excluded: set[str], want: int,
                   plan_name: str) -> SearchResult | None:
    """The first `want` walk candidates whose ids are not excluded, or None when fewer survive."""
    if not excluded:
        labels, distances = labels[:want], distances[:want]
    ids = g.ids.ids_at(labels)
    keep = [i for i, item_id in enumerate(ids) if item_id not in excluded][:want]
    if len(keep) < want:
        return None
    return SearchResult([ids[i] for i in keep], (1.0 - distances[keep]).tolist(), plan_name)


def _filter_mask(g: Graph, filters: Sequence[AttributeFilter]) -> np.ndarray:
    """`lmrec.filters.matches` over every slot at once: AND over the filters of OR over each one's value
    bitmaps (which hold live labels only; a value no item holds has none). `filters` must not be empty."""
    mask: np.ndarray | None = None
    for f in filters:
        holders = np.zeros(g.capacity, dtype=bool)
        for value in f.values:
            if g.attributes.known(f.key, value):
                holders |= g.attributes.bitmap(f.key, value, g.next_label)
        if mask is None:
            mask = holders
        else:
            mask &= holders
    assert mask is not None
    return mask


def _exact(g: Graph, q: np.ndarray, labels: np.ndarray, k: int) -> SearchResult:
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
