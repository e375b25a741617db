"""The retrieval query planner, on plain counts: which plan each query shape and index state gets."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from retrieval_service.index import IndexConfig, planner
from retrieval_service.index.planner import Eligible, IndexCounts, Kind, Plan, Query, plan, shortcut

# 20k items, rows read from hnswlib: with walk_cost_per_ef=24 at ef=128 a scan wins below
# sqrt(24 * 128 * 20000 / 100) ~ 784 eligible items.
CONFIG = IndexConfig.without_settings(exact_scan_threshold=300, ef_max=2048, filter_graph_share=0.1)
LIVE = IndexCounts(live=20_000, has_copy=False)


def query(k: int = 10, ef: int = 128, filters: int = 0, excluded: int = 0) -> Query:
    return Query(k, ef, filters, excluded)


def chain(p: Plan | None) -> list[tuple[Kind, tuple[int, ...]]]:
    """The plan and its fallbacks, as (kind, efs)."""
    out = []
    while p is not None:
        out.append((p.kind, p.efs))
        p = p.fallback
    return out


def test_the_planner_imports_neither_hnswlib_nor_numpy():
    source = Path(planner.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"hnswlib", "numpy"}


def test_ef_is_the_default_when_not_asked_for_and_clamped_otherwise():
    config = IndexConfig.without_settings(ef_default=50, ef_min=16, ef_max=300)
    assert [planner.clamp_ef(e, config) for e in (None, 0, 1, 100, 10**6)] == [50, 50, 16, 100, 300]


def test_walks_that_come_up_short_widen_fourfold_up_to_ef_max():
    assert planner.widening(100, 2048) == (100, 400, 1600, 2048)
    assert planner.widening(2048, 2048) == (2048,)
    assert planner.widening(600, 500) == (600,)


def test_an_unrestricted_query_walks_the_main_graph_then_scans_exactly():
    p = plan(query(), LIVE, Eligible(20_000, 0), CONFIG)
    assert (p.kind, p.name, p.want, p.candidates, p.label_filter) == (Kind.WALK, "hnsw", 10, 10, False)
    assert chain(p) == [(Kind.WALK, (128, 512, 2048)), (Kind.EXACT, ())]
    assert shortcut(query(), LIVE, CONFIG) is None


def test_nothing_eligible_is_an_empty_answer_reported_as_exact():
    p = plan(query(filters=1), LIVE, Eligible(0, 0), CONFIG)
    assert (p.kind, p.name, p.want, p.fallback) == (Kind.NOTHING, "exact", 0, None)


def test_at_most_the_threshold_eligible_scans_exactly_and_wants_no_more_than_there_are():
    for filters, excluded in ((0, 0), (1, 0), (0, 5)):
        p = plan(query(k=50, filters=filters, excluded=excluded), LIVE, Eligible(30, excluded), CONFIG)
        assert (p.kind, p.want) == (Kind.EXACT, 30)


def test_a_restricted_set_too_small_for_a_filtered_walk_scans_exactly():
    p = plan(query(filters=2), LIVE, Eligible(667, 0), CONFIG)
    assert p.kind is Kind.EXACT
    # A cheaper walk (lower ef) or no walk cost: the walk wins.
    assert plan(query(filters=2, ef=16), LIVE, Eligible(667, 0), CONFIG).kind is Kind.FILTERED_WALK
    # With an exact-scan copy rows cost 1/100 as much: a scan wins up to ~7,800 items.
    assert plan(query(filters=2), LIVE, Eligible(5000, 0), CONFIG).kind is Kind.FILTERED_WALK
    assert plan(query(filters=2), IndexCounts(20_000, True), Eligible(5000, 0), CONFIG).kind is Kind.EXACT
    no_rule = CONFIG.replaced(walk_cost_per_ef=0)
    assert plan(query(filters=2), LIVE, Eligible(667, 0), no_rule).kind is Kind.FILTERED_WALK
    # The rule prices restricted walks only: an unrestricted one walks whatever the index size.
    assert plan(query(), IndexCounts(400, False), Eligible(400, 0), CONFIG).kind is Kind.WALK


def test_a_filter_without_value_graphs_walks_with_a_label_filter_and_asks_for_its_graphs():
    counts = IndexCounts(20_000, False, value_graphs=((None, None),))
    p = plan(query(filters=1), counts, Eligible(4000, 0), CONFIG)
    assert (p.kind, p.name, p.label_filter, p.build_graphs_for) == (Kind.FILTERED_WALK, "hnsw_filtered", True, (0,))
    assert chain(p) == [(Kind.FILTERED_WALK, (128, 512, 2048)), (Kind.EXACT, ())]
    # With filter graphs off nothing is asked for; a filter naming no value the index knows asks for nothing.
    off = CONFIG.replaced(filter_graph_share=0)
    assert plan(query(filters=1), counts, Eligible(4000, 0), off).build_graphs_for == ()
    unknown = IndexCounts(20_000, False, value_graphs=((),))
    assert plan(query(filters=1), unknown, Eligible(4000, 0), CONFIG).build_graphs_for == ()


def test_value_graphs_answer_once_all_of_a_filters_values_have_one():
    counts = IndexCounts(20_000, False, value_graphs=((None, 2000), (2000,), (3000, None)))
    p = plan(query(filters=3), counts, Eligible(900, 0), CONFIG)
    # The first filter fully covered is walked; the others, and the exclusions, become the label filter.
    assert (p.kind, p.name, p.graphs_of, p.candidates, p.label_filter) == (
        Kind.VALUE_GRAPHS, "hnsw_value_graph", 1, 10, True)
    assert p.build_graphs_for == (0,)  # only filters looked at before the covered one
    assert chain(p) == [(Kind.VALUE_GRAPHS, (128,)), (Kind.FILTERED_WALK, (128, 512, 2048)), (Kind.EXACT, ())]
    alone = plan(query(filters=1), IndexCounts(20_000, False, ((2000,),)), Eligible(2000, 0), CONFIG)
    assert alone.kind is Kind.VALUE_GRAPHS and not alone.label_filter
    excluding = plan(query(filters=1, excluded=3), IndexCounts(20_000, False, ((2000,),)), Eligible(1997, 3), CONFIG)
    assert excluding.label_filter


def test_one_filter_with_its_graphs_walks_them_unmasked_dropping_the_excluded():
    counts = IndexCounts(20_000, False, value_graphs=((2000, 1500),))
    p = shortcut(query(filters=1, excluded=30), counts, CONFIG)
    assert (p.kind, p.name, p.want, p.candidates, p.efs, p.graphs_of, p.label_filter, p.fallback) == (
        Kind.VALUE_GRAPHS_THEN_DROP, "hnsw_value_graph", 10, 128, (128,), 0, False, None)
    assert shortcut(query(k=500, ef=64, filters=1), counts, CONFIG).candidates == 500


def test_the_unmasked_value_graph_walk_needs_every_graph_enough_items_and_a_walk_that_pays():
    assert shortcut(query(filters=1), IndexCounts(20_000, False, ((2000, None),)), CONFIG) is None
    assert shortcut(query(filters=1), IndexCounts(20_000, False, ((),)), CONFIG) is None
    assert shortcut(query(filters=2), IndexCounts(20_000, False, ((2000,), (2000,))), CONFIG) is None
    # Excluding so many that fewer than k are sure to be left.
    assert shortcut(query(filters=1, excluded=1995), IndexCounts(20_000, False, ((2000,),)), CONFIG) is None
    # So few items in the graphs that a scan costs less.
    assert shortcut(query(filters=1), IndexCounts(20_000, False, ((400, 300),)), CONFIG) is None


def test_exclusions_alone_drop_from_an_unmasked_walk_first():
    p = shortcut(query(excluded=500), LIVE, CONFIG)
    assert (p.kind, p.name, p.want, p.candidates, p.efs, p.label_filter, p.fallback) == (
        Kind.WALK_THEN_DROP, "hnsw_post_filter", 10, 128, (128,), False, None)
    # All of a small index's items, at an ef wide enough to return them.
    assert shortcut(query(k=100, ef=16, excluded=1), IndexCounts(800, False), CONFIG).candidates == 100
    assert shortcut(query(k=10, excluded=19_995), LIVE, CONFIG) is None  # fewer than k sure to be left
    assert shortcut(query(excluded=19_900), LIVE, CONFIG) is None  # a scan of the rest is cheaper


def test_once_counted_exclusions_alone_drop_from_a_walk_unless_that_came_up_short():
    # Most excluded ids were unknown: the count leaves enough for the walk the bounds ruled out.
    p = plan(query(excluded=19_995), LIVE, Eligible(19_000, 1000), CONFIG)
    assert chain(p) == [(Kind.WALK_THEN_DROP, (128,)), (Kind.FILTERED_WALK, (128, 512, 2048)), (Kind.EXACT, ())]
    assert p.fallback.label_filter
    tried = shortcut(query(excluded=500), LIVE, CONFIG)
    p = plan(query(excluded=500), LIVE, Eligible(19_500, 500), CONFIG, short=tried)
    assert chain(p) == [(Kind.FILTERED_WALK, (128, 512, 2048)), (Kind.EXACT, ())]
    # Excluded ids the index does not hold restrict nothing.
    assert plan(query(excluded=7), LIVE, Eligible(20_000, 0), CONFIG).kind is Kind.WALK


def test_a_value_earns_a_graph_above_the_scan_threshold_within_the_budget():
    assert planner.worth_a_graph(1000, 0, 20_000, CONFIG)
    assert not planner.worth_a_graph(300, 0, 20_000, CONFIG)  # scanned exactly anyway
    assert planner.worth_a_graph(1000, 1000, 20_000, CONFIG)  # exactly the 10% budget
    assert not planner.worth_a_graph(1000, 1001, 20_000, CONFIG)
    assert not planner.worth_a_graph(1000, 0, 20_000, CONFIG.replaced(filter_graph_share=0))


@pytest.mark.parametrize("kind", list(Kind))
def test_every_plan_reports_a_name_a_search_response_carries(kind):
    assert Plan(kind, 1).name in {"exact", "hnsw", "hnsw_filtered", "hnsw_post_filter", "hnsw_value_graph"}
