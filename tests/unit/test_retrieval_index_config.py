"""IndexConfig: the index's knobs come from RetrievalSettings, with its defaults and bounds."""

from __future__ import annotations

import pytest

from retrieval_service.index import IndexConfig, VectorIndex
from retrieval_service.settings import RetrievalSettings


def test_every_knob_comes_from_the_settings_with_its_default():
    settings = RetrievalSettings()
    config = IndexConfig.from_settings(settings)
    assert set(IndexConfig.model_fields) <= set(RetrievalSettings.model_fields)
    assert all(getattr(config, name) == getattr(settings, name) for name in IndexConfig.model_fields)
    assert config == IndexConfig()


def test_a_server_index_takes_its_settings_and_overrides():
    settings = RetrievalSettings(dimension=8, m=8, exact_scan_threshold=7, filter_graph_m=24)
    index = VectorIndex.from_settings(settings, ef_max=512)
    assert index.dimension == 8
    assert (index.config.m, index.config.exact_scan_threshold, index.config.ef_max) == (8, 7, 512)
    assert index.config.value_graph_m == 24 and IndexConfig(m=12).value_graph_m == 12


def test_an_index_built_without_settings_builds_no_filter_graphs_unless_asked():
    assert VectorIndex(4).config.filter_graph_share == 0
    assert VectorIndex(4, filter_graph_share=0.5).config.filter_graph_share == 0.5
    assert VectorIndex(4, config=IndexConfig(), m=8).config.filter_graph_share == IndexConfig().filter_graph_share


def test_knobs_are_checked_against_the_settings_bounds_when_set_and_when_retuned():
    with pytest.raises(ValueError, match="exact_scan_dtype"):
        VectorIndex(4, exact_scan_dtype="int8")
    with pytest.raises(ValueError, match="m\n"):
        VectorIndex(4, m=1)
    with pytest.raises(ValueError, match="no_such_knob"):
        VectorIndex(4, no_such_knob=1)
    index = VectorIndex(4, exact_scan_threshold=10)
    index.exact_scan_threshold = 20
    assert index.config.exact_scan_threshold == 20 == index.exact_scan_threshold
    with pytest.raises(ValueError, match="walk_cost_per_ef"):
        index.walk_cost_per_ef = -1
    assert index.config.walk_cost_per_ef == IndexConfig().walk_cost_per_ef
