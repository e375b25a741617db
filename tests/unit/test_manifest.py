"""Bundles are refused with a message saying why when the manifest does not match the files."""

from __future__ import annotations

import json

import pytest

from lmrec.errors import ArtifactMismatch
from lmrec.bundle import load_manifest
from tests.conftest import link_bundle


@pytest.fixture
def bundle_copy(tmp_path, bundle_dir):
    return link_bundle(bundle_dir, tmp_path / "bundle")


def test_valid_bundle_loads(bundle_copy):
    manifest = load_manifest(bundle_copy)
    assert manifest.encoder.dimension == 384
    assert set(manifest.models["encoder"]) == {"fp32", "int8", "fp16"}


def test_missing_manifest_is_refused(tmp_path):
    with pytest.raises(ArtifactMismatch, match="manifest.json is missing"):
        load_manifest(tmp_path)


def test_tampered_model_file_is_refused(bundle_copy):
    model = bundle_copy / "encoder.int8.onnx"
    tampered = model.read_bytes() + b"tampered"
    model.unlink()  # a hard link to the shared bundle: replace it, never write into it
    model.write_bytes(tampered)
    with pytest.raises(ArtifactMismatch, match="int8 file 'encoder.int8.onnx' fails its sha256 check"):
        load_manifest(bundle_copy)


def test_other_format_version_is_refused(bundle_copy):
    path = bundle_copy / "manifest.json"
    raw = json.loads(path.read_text())
    raw["format_version"] = 99
    path.write_text(json.dumps(raw))
    with pytest.raises(ArtifactMismatch, match="format_version 99"):
        load_manifest(bundle_copy)


def test_unknown_field_is_refused(bundle_copy):
    path = bundle_copy / "manifest.json"
    raw = json.loads(path.read_text())
    raw["surprise"] = 1
    path.write_text(json.dumps(raw))
    with pytest.raises(ArtifactMismatch, match="schema"):
        load_manifest(bundle_copy)


def test_unknown_ranker_kind_is_refused_by_the_ranking_worker(bundle_copy, tmp_path):
    from ranking_service.model import load_model
    from ranking_service.settings import RankingSettings

    path = bundle_copy / "manifest.json"
    raw = json.loads(path.read_text())
    raw["ranker_kind"] = "quantum"
    path.write_text(json.dumps(raw))
    with pytest.raises(ArtifactMismatch, match="needs ranker kind 'quantum'"):
        load_model(RankingSettings(bundle_dir=bundle_copy, state_dir=tmp_path / "state", warmup=False))
