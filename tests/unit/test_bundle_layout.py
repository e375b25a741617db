"""The bundle's vector layout: recorded by new manifests, derived for older ones exactly as the ranker did
before it was recorded, and refused when it does not add up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmrec.bundle import FORMAT_VERSION, Bundle, EncoderSpec, Manifest, VectorLayout, load_manifest, write_manifest
from lmrec.errors import ArtifactMismatch

REPO = Path(__file__).resolve().parents[2]
TEXT = 8


def _manifest(**fields) -> dict:
    raw = {"format_version": 1, "model_version": "v", "ranker_kind": "lm_seq", "created_at": "now", "models": {},
           "encoder": {"base_model": "m", "tokenizer_dir": "tokenizer", "max_length": 16, "dimension": TEXT}}
    return {**raw, **fields}


def _bundle_dir(tmp_path: Path, raw: dict) -> Path:
    (tmp_path / "tokenizer").mkdir(exist_ok=True)
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    return tmp_path


def _extra_before(hp: dict) -> int:
    """How ranking_service/seq_ranker.py counted trailing coordinates before layouts were recorded."""
    return 0 if hp.get("unit", True) else (2 if "cold_bias" in hp else 1)


@pytest.mark.parametrize("hp, trailing", [
    ({"dim": 4}, ()),
    ({"dim": 4, "unit": True}, ()),
    ({"dim": 4, "unit": False, "cold_bias": 0.1}, ("text_only", "norm_pad")),
    ({"dim": 4, "unit": False}, ("norm_pad",)),
])
def test_a_legacy_trained_manifest_gets_the_layout_the_ranker_used(tmp_path, hp, trailing):
    served = 4 + TEXT + _extra_before(hp)
    bundle = Bundle.load(_bundle_dir(tmp_path, _manifest(hyperparameters=hp, index_params={"dimension": served})))
    assert bundle.manifest.vector_layout is None
    assert bundle.layout == VectorLayout(collaborative=4, text=TEXT, trailing=trailing)
    assert bundle.layout.dimension == served == bundle.manifest.served_dimension


def test_a_legacy_zero_shot_manifest_is_text_only(tmp_path):
    bundle = Bundle.load(_bundle_dir(tmp_path, _manifest(ranker_kind="zero_shot")))
    assert bundle.layout == VectorLayout(collaborative=0, text=TEXT)
    assert bundle.layout.dimension == bundle.manifest.served_dimension == TEXT


def test_a_legacy_manifest_whose_derived_layout_does_not_add_up_is_refused(tmp_path):
    raw = _manifest(hyperparameters={"dim": 4, "unit": False, "cold_bias": 0.1}, index_params={"dimension": 13})
    with pytest.raises(ArtifactMismatch, match=r"vector_layout adds up to 14 .* served vectors have 13"):
        Bundle.load(_bundle_dir(tmp_path, raw))
    raw = _manifest(hyperparameters={}, index_params={"dimension": 12})
    with pytest.raises(ArtifactMismatch, match="hyperparameter 'dim' is missing"):
        Bundle.load(_bundle_dir(tmp_path, raw))


def test_a_recorded_layout_round_trips(tmp_path):
    layout = VectorLayout(collaborative=4, text=TEXT, trailing=("text_only", "norm_pad"))
    manifest = Manifest(format_version=FORMAT_VERSION, model_version="v", ranker_kind="lm_seq", created_at="now",
                        models={}, encoder=EncoderSpec(base_model="m", tokenizer_dir="tokenizer", max_length=16,
                                                       dimension=TEXT),
                        hyperparameters={"dim": 4, "unit": True},  # the record wins over the legacy keys
                        index_params={"dimension": 14}, vector_layout=layout)
    (tmp_path / "tokenizer").mkdir()
    write_manifest(tmp_path, manifest)
    written = json.loads((tmp_path / "manifest.json").read_text())
    assert written["vector_layout"] == {"collaborative": 4, "text": TEXT, "trailing": ["text_only", "norm_pad"]}
    bundle = Bundle.load(tmp_path)
    assert bundle.layout == layout and bundle.manifest == manifest


@pytest.mark.parametrize("layout, why", [
    ({"collaborative": 4, "text": TEXT, "trailing": ["norm_pad"]}, "vector_layout adds up to 13"),
    ({"collaborative": 6, "text": 6, "trailing": ["text_only", "norm_pad"]}, "vector_layout.text is 6"),
    ({"collaborative": 4, "text": TEXT, "trailing": ["text_only", "bias"]}, "trailing"),
    ({"collaborative": 4, "text": TEXT, "extra": 2}, "extra"),
])
def test_an_inconsistent_recorded_layout_is_refused(tmp_path, layout, why):
    raw = _manifest(format_version=2, index_params={"dimension": 14}, vector_layout=layout)
    with pytest.raises(ArtifactMismatch, match=why):
        Bundle.load(_bundle_dir(tmp_path, raw))
    with pytest.raises(ArtifactMismatch, match=why):
        load_manifest(tmp_path)


def test_format_2_needs_a_layout_and_a_rewritten_format_1_manifest_keeps_its_shape(tmp_path):
    with pytest.raises(ArtifactMismatch, match="format_version 2 needs a vector_layout"):
        load_manifest(_bundle_dir(tmp_path, _manifest(format_version=2, hyperparameters={"dim": 4},
                                                      index_params={"dimension": 12})))
    _bundle_dir(tmp_path, _manifest(hyperparameters={"dim": 4}, index_params={"dimension": 12}))
    write_manifest(tmp_path, load_manifest(tmp_path).model_copy(update={"model_version": "v2"}))
    assert "vector_layout" not in json.loads((tmp_path / "manifest.json").read_text())


@pytest.mark.parametrize("name", ["lmrec-ml100k", "minilm-zeroshot"])
def test_shipped_bundles_load_with_the_layout_they_were_served_with(name):
    path = REPO / "artifacts" / name
    if not (path / "manifest.json").is_file():
        pytest.skip(f"{path} is absent")
    bundle = Bundle.load(path, verify_checksums=False)
    hp = bundle.manifest.hyperparameters
    if bundle.manifest.ranker_kind == "lm_seq":
        assert bundle.layout.collaborative == int(hp["dim"])
        assert len(bundle.layout.trailing) == _extra_before(hp)
    assert bundle.layout.dimension == bundle.manifest.served_dimension
