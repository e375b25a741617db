"""ML correctness of the exported encoder: INT8 and FP32 ONNX agree with each other and with meaning."""

from __future__ import annotations

import numpy as np

from lmrec.bundle import Bundle, load_manifest
from ranking_service.onnx_session import RuntimeChoice
from ranking_service.text_encoder import TextEncoder

TEXTS = [
    "Toy Story (1995) Genres: Animation, Children's, Comedy.",
    "Alien (1979) Genres: Action, Horror, Sci-Fi, Thriller.",
    "a funny animated movie for young children",
    "Sense and Sensibility (1995) Genres: Drama, Romance.",
]


def encoders(bundle_dir):
    bundle = Bundle.load(bundle_dir)
    return {p: TextEncoder(bundle, RuntimeChoice(p, ["CPUExecutionProvider"])) for p in ("fp32", "int8")}


def test_int8_matches_fp32_within_tolerance(bundle_dir):
    enc = encoders(bundle_dir)
    fp32, int8 = enc["fp32"].encode(TEXTS), enc["int8"].encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(fp32, axis=1), 1.0, atol=1e-4)
    cosine = np.sum(fp32 * int8, axis=1)
    assert cosine.min() > 0.95, cosine
    # Quantisation must not change which item a query is closest to.
    assert np.argmax(fp32[:2] @ fp32[2]) == np.argmax(int8[:2] @ int8[2]) == 0


def test_export_parity_is_recorded_in_the_manifest(bundle_dir):
    parity = load_manifest(bundle_dir).parity
    assert parity["fp32_vs_torch_min_cosine"] > 0.9999
    assert parity["int8_vs_torch_min_cosine"] > 0.95


def test_padding_bucket_does_not_change_the_vector(bundle_dir):
    enc = encoders(bundle_dir)["fp32"]
    alone = enc.encode([TEXTS[2]])
    padded = enc.encode([TEXTS[2], " ".join(["word"] * 60)])[:1]
    np.testing.assert_allclose(alone, padded, atol=1e-5)
