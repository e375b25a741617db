"""Every service builds settings the same way: flags over environment, bad values stop at start by name."""

from __future__ import annotations

import pytest

from gateway.server import parse_settings as gateway_settings
from ranking_service.server import parse_settings as ranking_settings


def test_flags_override_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LMREC_GATEWAY_PORT", "6000")
    monkeypatch.setenv("LMREC_GATEWAY_RETRIEVAL_ADDRESSES", "a:1,b:2")
    settings = gateway_settings(["--port", "7000", "--port-file", str(tmp_path / "p")])
    assert settings.port == 7000 and settings.retrieval_addresses == ["a:1", "b:2"]
    assert settings.port_file == tmp_path / "p"


def test_bad_value_stops_with_the_field_name(monkeypatch):
    monkeypatch.setenv("LMREC_RANKING_MAX_BATCH_TEXTS", "0")
    with pytest.raises(SystemExit, match="max_batch_texts"):
        ranking_settings([])
