"""The catalogue's LM text vectors as computed at training time (FP32), shipped in the bundle.

A catalogue item whose text is unchanged since training is served from these vectors instead of being
re-encoded by the serving encoder. That is the "candidate-side representations computed at training
time" half of the design, and it matters for quality: the INT8 encoder's vectors differ from FP32 ones
by up to a few hundredths in cosine, and on ML-100K that cost ~10% of NDCG@10 when every catalogue
item went through it (docs/evaluation.md), while the small item-tower and context graphs lose nothing
measurable in INT8. New items, edited texts and free-text queries still go through the serving encoder.
Texts are matched by SHA-256, so the bundle holds no item text.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from lmrec.bundle.manifest import Manifest
from lmrec.errors import ArtifactMismatch

VECTORS = "text_embeddings"
HASHES = "text_hashes"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TrainedTexts:
    def __init__(self, item_ids: list[str], hashes: list[str], vectors: np.ndarray) -> None:
        if len(item_ids) != len(hashes) or len(item_ids) != len(vectors):
            raise ArtifactMismatch(f"trained text vectors: {len(item_ids)} ids, {len(hashes)} hashes, "
                                   f"{len(vectors)} vectors")
        self._rows = {(item_id, h): row for row, (item_id, h) in enumerate(zip(item_ids, hashes))}
        self._vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def lookup(self, item_ids: list[str], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors [n, T] with zero rows for misses, bool hit mask [n]); an empty id never hits."""
        rows = np.array([self._rows.get((i, text_hash(t)), -1) if i else -1 for i, t in zip(item_ids, texts)],
                        dtype=np.int64)
        hit = rows >= 0
        out = np.zeros((len(texts), self._vectors.shape[1]), dtype=np.float32)
        out[hit] = self._vectors[rows[hit]]
        return out, hit


def read_trained_texts(directory: Path, manifest: Manifest) -> TrainedTexts | None:
    """None for bundles without them (older bundles, or a bundle made without a catalogue)."""
    files = manifest.extra_files
    if VECTORS not in files or HASHES not in files:
        return None
    keyed = json.loads((Path(directory) / files[HASHES]).read_text())
    vectors = np.load(Path(directory) / files[VECTORS])
    if vectors.ndim != 2 or vectors.shape[1] != manifest.encoder.dimension:
        raise ArtifactMismatch(f"bundle {manifest.model_version}: {files[VECTORS]} has shape {vectors.shape}, "
                               f"expected [n, {manifest.encoder.dimension}]")
    return TrainedTexts(keyed["item_ids"], keyed["sha256"], vectors)


def write_trained_texts(directory: Path, item_ids: list[str], texts: list[str], vectors: np.ndarray) -> dict[str, str]:
    """Writes the two files into a bundle being built; returns their manifest `extra_files` entries."""
    np.save(directory / f"{VECTORS}.npy", np.asarray(vectors, dtype=np.float32))
    (directory / f"{HASHES}.json").write_text(json.dumps({"item_ids": list(item_ids),
                                                           "sha256": [text_hash(t) for t in texts]}))
    return {VECTORS: f"{VECTORS}.npy", HASHES: f"{HASHES}.json"}
