"""The query planner: which search answers a query and with what (and which values earn a filter graph),
decided from plain counts.

Pure: no hnswlib, no numpy, no locks; `search.py` gathers the counts and runs what this decides.

A query is planned in up to two steps. `shortcut` looks only at bounds on the eligible set that cost
nothing to know, for the two plans that need no label mask (building one costs a pass over every slot,
resolving excluded ids to slots ~0.4 ms at 1M for 500 ids). When neither applies, or the one tried comes
up short, the eligible set is counted and `plan` decides, as a chain of plans each with a fallback for
when it comes up short (finds fewer than it needs), ending in an exact scan that cannot.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retrieval_service.index.config import IndexConfig

# hnswlib's get_items costs ~20 us a row (0.8.0, 384-d) against ~0.2 us for a row of a numpy copy:
# how many copy rows one fetched row is worth to the planner.
FETCH_ROW_COST = 100
# How much wider each retry of a walk that came up short is.
WIDENING = 4


class Kind(Enum):
    NOTHING = "nothing"  # nothing is eligible: an empty answer
    EXACT = "exact"  # brute-force scan of the eligible set
    WALK = "walk"  # walk of the main graph, nothing restricted
    FILTERED_WALK = "filtered_walk"  # walk of the main graph with the eligible-set mask as hnswlib's label filter
    WALK_THEN_DROP = "walk_then_drop"  # unmasked walk of the main graph, excluded ids dropped from its candidates
    VALUE_GRAPHS = "value_graphs"  # walks of one filter's value graphs, any other restriction as a label filter
    VALUE_GRAPHS_THEN_DROP = "value_graphs_then_drop"  # the only filter's value graphs, excluded ids dropped


# What a result reports as its plan (SearchResult.plan, the SearchResponse field).
REPORTED = {
    Kind.NOTHING: "exact",
    Kind.EXACT: "exact",
    Kind.WALK: "hnsw",
    Kind.FILTERED_WALK: "hnsw_filtered",
    Kind.WALK_THEN_DROP: "hnsw_post_filter",
    Kind.VALUE_GRAPHS: "hnsw_value_graph",
    Kind.VALUE_GRAPHS_THEN_DROP: "hnsw_value_graph",
}


# Not frozen: a search builds several of these, and a frozen dataclass costs ~0.5 us more to build.
@dataclass(slots=True)
class Query:
    k: int
    ef: int  # already clamped (`clamp_ef`)
    filters: int  # how many filters, ANDed
    excluded: int  # distinct ids asked to be excluded, known to the index or not


@dataclass(slots=True)
class IndexCounts:
    live: int  # live items
    has_copy: bool  # the index keeps a copy of the vectors for exact scans (else it reads rows from hnswlib)
    # Per filter, per value of it the index knows: the size of that value's graph, None while it has none.
    value_graphs: tuple[tuple[int | None, ...], ...] = ()


@dataclass(slots=True)
class Eligible:
    count: int  # live items passing every filter, minus the excluded
    excluded: int  # excluded ids the index holds


@dataclass(slots=True)
class Plan:
    kind: Kind
    want: int  # results it must find; fewer is coming up short
    efs: tuple[int, ...] = ()  # the walk's ef, then the ef of each wider walk tried while it comes up short
    candidates: int = 0  # what a walk asks hnswlib for (more than `want` where excluded ids are dropped after)
    label_filter: bool = False  # walk with the eligible-set mask (hnswlib calls back into Python per node)
    graphs_of: int = -1  # the filter whose value graphs are walked
    # What runs when this plan comes up short. None on a shortcut: count the eligible set, then `plan`.
    fallback: Plan | None = None
    # Filters whose known values have no graph yet: worth asking the background builder for.
    build_graphs_for: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return REPORTED[self.kind]


def clamp_ef(ef: int | None, config: IndexConfig) -> int:
    """The walk breadth a query gets: the default when it asks for none, else its ask within the bounds."""
    if not ef:
        return config.ef_default
    return max(config.ef_min, min(config.ef_max, int(ef)))


def exact_is_cheaper(eligible: int, ef: int, want: int, counts: IndexCounts, config: IndexConfig) -> bool:
    """Whether scanning `eligible` items beats a filtered walk (or the set is below the scan threshold).

    A filtered walk costs about `walk_cost_per_ef` * ef / selectivity rows of exact scan, so a scan wins
    when eligible^2 * row cost < walk_cost_per_ef * ef * live items.
    """
    row_cost = 1 if counts.has_copy else FETCH_ROW_COST
    return eligible <= config.exact_scan_threshold or (
        eligible * eligible * row_cost < config.walk_cost_per_ef * max(ef, want) * counts.live)


def shortcut(query: Query, counts: IndexCounts, config: IndexConfig) -> Plan | None:
    """A plan that needs neither a label mask nor the eligible count, or None when none fits.

    - One filter whose known values all have graphs: walk them and drop the excluded ids from what they
      find. At 1M items this cut the 5% filter's p50 gap to unfiltered from 0.44 to 0.11 ms at ef=128
      (docs/benchmarks/retrieval.md).
    - Exclusions alone: an unfiltered walk's candidates minus the excluded. A label filter would make
      hnswlib call back into Python for every node it visits (1.4-1.5x the walk at 1M with 500 ids).
    Either needs at least k eligible items for sure, and a walk that costs less than a scan.
    """
    k, ef = query.k, query.ef
    if query.filters == 1:
        sizes = counts.value_graphs[0]
        if sizes and None not in sizes:
            # Multi-valued items can sit in several graphs, so the sizes bound the eligible set from both sides.
            at_most = sum(sizes)
            at_least = max(sizes) - query.excluded
            if at_least >= k and not exact_is_cheaper(at_most, ef, k, counts, config):
                return Plan(Kind.VALUE_GRAPHS_THEN_DROP, k, efs=(ef,), candidates=max(ef, k), graphs_of=0)
    if query.excluded and not query.filters:
        at_least = counts.live - query.excluded
        if at_least >= k and not exact_is_cheaper(at_least, ef, k, counts, config):
            return _walk_then_drop(k, ef, counts.live)
    return None


def plan(query: Query, counts: IndexCounts, eligible: Eligible, config: IndexConfig, short: Plan | None = None) -> Plan:
    """The plan once the eligible set is counted; `short` is the shortcut that came up short, if one did.

    An exact scan when the set is at most `exact_scan_threshold` or so small a share of the index that a
    walk would cost more; for exclusions alone, an unfiltered walk minus the excluded (unless that was the
    shortcut); with filters, the value graphs of the first filter that has all of its values' graphs;
    otherwise a walk of the main graph (label-filtered when anything is restricted). Walks that come up
    short widen `ef` up to `ef_max`, then scan exactly.
    """
    want = min(query.k, eligible.count)
    if want == 0:
        return Plan(Kind.NOTHING, 0)
    exact = Plan(Kind.EXACT, want)
    restricted = query.filters > 0 or eligible.excluded > 0
    if eligible.count <= config.exact_scan_threshold or (
            restricted and exact_is_cheaper(eligible.count, query.ef, want, counts, config)):
        return exact
    efs = widening(query.ef, config.ef_max)
    if not query.filters:
        walk = Plan(Kind.FILTERED_WALK if restricted else Kind.WALK, want, efs=efs, candidates=want,
                    label_filter=restricted, fallback=exact)
        if not restricted or (short is not None and short.kind is Kind.WALK_THEN_DROP):
            return walk
        # Exclusions only (the shortcut did not fit, e.g. unknown ids made it count too many).
        return _walk_then_drop(want, query.ef, counts.live, fallback=walk)
    covered = next((i for i, sizes in enumerate(counts.value_graphs) if sizes and None not in sizes), None)
    build = ()
    if config.filter_graph_share > 0:
        looked_at = counts.value_graphs if covered is None else counts.value_graphs[:covered]
        build = tuple(i for i, sizes in enumerate(looked_at) if None in sizes)
    if covered is None:
        return Plan(Kind.FILTERED_WALK, want, efs=efs, candidates=want, label_filter=True, fallback=exact,
                    build_graphs_for=build)
    walk = Plan(Kind.FILTERED_WALK, want, efs=efs, candidates=want, label_filter=True, fallback=exact)
    # Walking the graphs implies only that filter; anything else is applied as the label filter.
    narrower = query.filters > 1 or eligible.excluded > 0
    return Plan(Kind.VALUE_GRAPHS, want, efs=(query.ef,), candidates=want, label_filter=narrower, graphs_of=covered,
                fallback=walk, build_graphs_for=build)


def worth_a_graph(count: int, planned: int, live: int, config: IndexConfig) -> bool:
    """Whether a value of `count` items gets its own graph, with `planned` items already in (or queued for)
    the graph's filter graphs: too small a value is scanned exactly anyway, and all of them together stay
    within `filter_graph_share` of the live items."""
    return count > config.exact_scan_threshold and planned + count <= config.filter_graph_share * live


@functools.lru_cache(maxsize=256)
def widening(ef: int, ef_max: int) -> tuple[int, ...]:
    """`ef`, then each wider ef tried after a walk comes up short, ending at `ef_max`."""
    efs = [ef]
    while efs[-1] < ef_max:
        efs.append(min(ef_max, efs[-1] * WIDENING))
    return tuple(efs)


def _walk_then_drop(want: int, ef: int, live: int, fallback: Plan | None = None) -> Plan:
    # A walk costs what its ef costs whatever k it returns: ask for all ef candidates, to drop from.
    candidates = min(max(ef, want), live)
    return Plan(Kind.WALK_THEN_DROP, want, efs=(max(ef, candidates),), candidates=candidates, fallback=fallback)
