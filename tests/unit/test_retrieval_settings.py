"""Retrieval settings: flags over environment over defaults, rejected at start with the field's name."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from retrieval_service.server import parse_settings
from retrieval_service.settings import RetrievalSettings


def test_defaults():
    s = RetrievalSettings()
    assert (s.host, s.port, s.dimension, s.data_dir) == ("127.0.0.1", 50053, 384, Path("var/retrieval"))
    assert (s.shard_index, s.shard_count, s.ef_default, s.ef_min, s.ef_max) == (0, 1, 128, 16, 2048)
    assert (s.m, s.ef_construction, s.tombstone_rebuild_ratio, s.snapshot_every) == (16, 200, 0.2, 10_000)


def test_flags_override_environment(monkeypatch):
    monkeypatch.setenv("LMREC_RETRIEVAL_PORT", "6000")
    monkeypatch.setenv("LMREC_RETRIEVAL_DIMENSION", "64")
    s = parse_settings(["--port", "7000", "--shard-index", "2", "--shard-count", "3", "--data-dir", "/tmp/x"])
    assert (s.port, s.dimension, s.shard_index, s.shard_count, s.data_dir) == (7000, 64, 2, 3, Path("/tmp/x"))


@pytest.mark.parametrize(
    "fields, name",
    [
        ({"shard_index": 3, "shard_count": 3}, "shard_index"),
        ({"ef_min": 500}, "ef_min"),
        ({"port": 70000}, "port"),
        ({"tombstone_rebuild_ratio": 0}, "tombstone_rebuild_ratio"),
        ({"dimensions": 3}, "dimensions"),
    ],
)
def test_bad_values_fail_naming_the_field(fields, name):
    with pytest.raises(ValidationError, match=name):
        RetrievalSettings(**fields)
