"""Attribute filters: one meaning (lmrec/filters.py), which the gateway and the retrieval index both apply."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway.policy.scenarios import parse_scenarios
from gateway.recommend import RecommendPipeline, _session_filters
from gateway.servicer import validate_recommend
from gateway.settings import GatewaySettings
from lmrec import validation as v
from lmrec.catalog import CatalogItem
from lmrec.errors import InvalidArgument
from lmrec.filters import AttributeFilter, as_filters, attribute_filter, filter_messages, matches, parse_filters
from lmrec.v1 import common_pb2, gateway_service_pb2 as gw
from retrieval_service.index import VectorIndex

pytestmark = pytest.mark.timeout(120)

ITEM = {"genre": ["Comedy", "Drama"], "year": ["1994"], "tags": []}


@pytest.mark.parametrize(("filters", "passes"), [
    ([], True),  # no filters pass every item
    ([("genre", ["Comedy"])], True),
    ([("genre", ["Horror", "Drama"])], True),  # any one value of a filter
    ([("genre", ["comedy"])], False),  # exact, case-sensitive
    ([("genre", ["Comedy"]), ("year", ["1995"])], False),  # filters AND
    ([("genre", ["Comedy", "Horror"]), ("genre", ["Drama", "Western"])], True),  # two on one key: both hold
    ([("genre", ["Horror"]), ("genre", ["Drama"])], False),
    ([("studio", ["Pixar"])], False),  # a missing key holds nothing
    ([("tags", ["x"])], False),  # nor does a key without values
    ([("genre", [])], False),  # a filter without values passes nothing (refused on the wire)
])
def test_the_meaning_of_a_filter(filters, passes):
    assert matches(ITEM, as_filters(filters)) is passes


def test_canonical_form_keeps_the_first_of_repeated_values_and_is_a_key_values_pair():
    f = attribute_filter("genre", ["b", "a", "b"])
    assert f == AttributeFilter("genre", ("b", "a")) and tuple(f) == ("genre", ("b", "a"))
    assert f.held({"genre": ["a", "b", "c"]}) == ("b", "a")
    assert as_filters([f, ("k", ["v"])]) == (f, AttributeFilter("k", ("v",)))


@pytest.mark.parametrize(("message", "field"), [
    (common_pb2.AttributeFilter(values=["a"]), "filters[0].key"),
    (common_pb2.AttributeFilter(key="genre"), "filters[0].values"),
    (common_pb2.AttributeFilter(key="genre", values=["a", ""]), "filters[0].values[1]"),
    (common_pb2.AttributeFilter(key="g" * (v.MAX_ID_BYTES + 1), values=["a"]), "filters[0].key"),
    (common_pb2.AttributeFilter(key="genre", values=["a"] * (v.MAX_FILTER_VALUES + 1)), "filters[0].values"),
])
def test_the_gateway_and_retrieval_refuse_the_same_filters(message, field):
    for limit in (v.MAX_FILTERS, v.MAX_SEARCH_FILTERS):
        with pytest.raises(InvalidArgument) as raised:
            parse_filters([message], "filters", limit)
        assert raised.value.field == field
    with pytest.raises(InvalidArgument) as raised:
        validate_recommend(gw.RecommendRequest(user_id="u", k=1, filters=[message]))
    assert raised.value.field == field


def test_retrieval_takes_the_scenario_and_session_filters_beside_a_full_request():
    many = [common_pb2.AttributeFilter(key=f"k{i}", values=["v"]) for i in range(v.MAX_FILTERS + 1)]
    with pytest.raises(InvalidArgument):
        parse_filters(many, "filters", v.MAX_FILTERS)
    assert len(parse_filters(many, "filters", v.MAX_SEARCH_FILTERS)) == v.MAX_FILTERS + 1


def test_the_session_gets_the_room_retrieval_has_left_newest_first():
    class Plan:
        def filters(self):
            return [(f"s{i}", ["v"]) for i in range(16)]

    assert _session_filters(None, 0) == []
    assert _session_filters(Plan(), v.MAX_FILTERS) == Plan().filters()
    assert _session_filters(Plan(), v.MAX_FILTERS + 3) == Plan().filters()[3:]
    assert _session_filters(Plan(), v.MAX_SEARCH_FILTERS) == []


def test_a_scenario_filter_retrieval_would_refuse_is_refused_when_the_file_is_read():
    assert parse_scenarios('[home]\nfilters = { genre = ["Comedy"] }')["home"].filters == {"genre": ["Comedy"]}
    for bad in ('genre = []', '"" = ["a"]', 'genre = [""]'):
        with pytest.raises(ValueError, match="field 'filters'"):
            parse_scenarios(f"[home]\nfilters = {{ {bad} }}")


# ------------------------------------------------------------- the gateway and the index agree with `matches`

KEYS = ("genre", "lang", "year")
VALUES = ("a", "b", "c", "A")  # "A" beside "a": case matters

attributes_st = st.dictionaries(st.sampled_from(KEYS), st.lists(st.sampled_from(VALUES), max_size=4), max_size=3)
filters_st = st.lists(
    st.tuples(st.sampled_from(KEYS), st.lists(st.sampled_from((*VALUES, "unheld")), min_size=1, max_size=3)),
    max_size=3)

# Index knobs that steer the planner onto each of its paths: an exact scan, a label-filtered walk of the
# main graph, and (after their background build) walks of per-value graphs.
PLANS = {
    "exact": dict(exact_scan_threshold=10_000),
    "walk": dict(exact_scan_threshold=0, walk_cost_per_ef=0),
    "value_graphs": dict(exact_scan_threshold=0, walk_cost_per_ef=0, filter_graph_share=10.0),
}


class _Store:
    """What RecommendPipeline._popularity reads of a GatewayStore."""

    def __init__(self, catalog: dict[str, CatalogItem]) -> None:
        self.catalog = catalog
        self.catalog_version = 1
        self.popularity = {item_id: i for i, item_id in enumerate(catalog)}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalogue=st.lists(attributes_st, min_size=1, max_size=30), pairs=filters_st,
       excluded=st.sets(st.integers(0, 29), max_size=4), seed=st.integers(0, 2**16))
def test_the_index_and_the_gateway_keep_exactly_the_items_matches_keeps(catalogue, pairs, excluded, seed):
    ids = [f"i{i}" for i in range(len(catalogue))]
    # What each tier does with a request's filters: the gateway parses them, sends their contract form,
    # and retrieval parses that again.
    asked = parse_filters(filter_messages(as_filters(pairs)), "filters")
    sent = parse_filters(filter_messages(asked), "filters", v.MAX_SEARCH_FILTERS)
    assert sent == asked
    exclude = {f"i{i}" for i in excluded}
    expected = {i for i, a in zip(ids, catalogue) if matches(a, asked)}

    catalog = {i: CatalogItem(i, i, i, a) for i, a in zip(ids, catalogue)}
    pipeline = RecommendPipeline(GatewaySettings(), _Store(catalog), ranking=None, retrieval=None)
    assert set(pipeline._popularity(catalog, exclude, asked, len(ids)).ids) == expected - exclude

    vectors = np.random.default_rng(seed).standard_normal((len(ids), 4)).astype(np.float32) + 0.01
    query = vectors[0] + 0.5
    for name, knobs in PLANS.items():
        index = VectorIndex(4, initial_capacity=32, auto_rebuild=False, **knobs)
        index.upsert(ids, vectors, catalogue)
        for ready in (False, True) if name == "value_graphs" else (False,):
            if ready:  # the searches above asked for their values' graphs
                index.wait_for_filter_graphs(30)
            assert set(index.search(query, len(ids), exclude, sent).ids) == expected - exclude, name
            few = index.search(query, 3, exclude, sent).ids
            assert set(few) <= expected - exclude and len(few) == min(3, len(expected - exclude)), name
