"""The trained LM sequence ranker (`ranker_kind: lm_seq`), on ONNX Runtime. No gRPC, no batching.

Bundle layout (written by training/lm_bundle.py; see training/lm_model.py for the maths):
  * role `item_tower`: (text_embedding [B, T], id_embedding [B, d]) -> item vector [ê ; t], [B, d + T];
  * role `context`: (history [B, L, d], mask [B, L]) -> unit ĥ [B, d];
  * extra files `item_ids` (JSON list) and `id_embeddings` (float32 [n, d]): the collaborative part of
    every item seen in training. Any other item (new, cold, or upserted later) is represented by its text
    alone, so the catalogue can change without retraining.
The served context is [ĥ ; β·q ; b ; 0] for a free-text request q, so score = ĥ·e + β·q·t + b·[text only].
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmrec.errors import ArtifactMismatch
from lmrec.manifest import Manifest
from ranking_service.item_store import ItemStore
from ranking_service.onnx_session import RuntimeChoice, model_path, new_session, run
from ranking_service.ranker import RankContext, Ranker, register_ranker


class SequenceRanker(Ranker):
    kind = "lm_seq"

    def __init__(self, bundle_dir: Path, manifest: Manifest, store: ItemStore, runtime: RuntimeChoice,
                 options: dict) -> None:
        super().__init__(manifest, store)
        hp = manifest.hyperparameters
        try:
            self.dim = int(hp["dim"])
            self.max_len = int(hp["max_len"])
            self.query_weight = float(hp["query_weight"]) * float(hp.get("query_scale", 1.0))
            # Raw (non-unit) heads serve extra item coordinates (training/lm_model.py ItemTower): the
            # text-only flag, whose context weight is the calibrated cold-item bias (bundles made before
            # it have none), and one that equalises norms, weighted 0.
            self.cold_bias = float(hp.get("cold_bias", 0.0))
            self.extra = 0 if hp.get("unit", True) else (2 if "cold_bias" in hp else 1)
            self._tail = np.array([self.cold_bias, 0.0] if self.extra == 2 else [0.0] * self.extra, dtype=np.float32)
        except KeyError as exc:
            raise ArtifactMismatch(f"bundle {manifest.model_version}: hyperparameter {exc} is missing") from None
        threads = int(options.get("intra_op_threads", 1))
        self._runtime = runtime
        self._items = new_session(model_path(bundle_dir, manifest, "item_tower", runtime.precision), runtime, threads, 1)
        self._context = new_session(model_path(bundle_dir, manifest, "context", runtime.precision), runtime, threads, 1)
        ids = json.loads((Path(bundle_dir) / manifest.extra_files["item_ids"]).read_text())
        self._id_rows = {item_id: row for row, item_id in enumerate(ids)}
        self._id_embeddings = np.load(Path(bundle_dir) / manifest.extra_files["id_embeddings"])
        if self._id_embeddings.shape != (len(ids), self.dim):
            raise ArtifactMismatch(f"bundle {manifest.model_version}: id_embeddings has shape "
                                   f"{self._id_embeddings.shape}, expected {(len(ids), self.dim)}")

    @property
    def vector_dimension(self) -> int:
        return self.dim + self.manifest.encoder.dimension + self.extra

    def item_vectors(self, text_vectors: np.ndarray, item_ids: list[str] | None = None) -> np.ndarray:
        ids = np.zeros((len(text_vectors), self.dim), dtype=np.float32)
        for n, item_id in enumerate(item_ids or ()):
            row = self._id_rows.get(item_id)
            if row is not None:
                ids[n] = self._id_embeddings[row]
        feeds = {"text_embedding": np.ascontiguousarray(text_vectors, dtype=np.float32), "id_embedding": ids}
        return run(self._items, feeds, self._runtime.on_cuda)[0].astype(np.float32)

    def text_only(self, item_ids: list[str]) -> list[bool]:
        return [item_id not in self._id_rows for item_id in item_ids]

    def history_vector(self, history_item_ids: list[str]) -> np.ndarray | None:
        vectors, known = self.store.gather(history_item_ids[-self.max_len:])
        vectors = vectors[known, : self.dim]
        if not len(vectors):
            return None
        feeds = {"history": vectors[None], "mask": np.ones((1, len(vectors)), dtype=np.float32)}
        return run(self._context, feeds, self._runtime.on_cuda)[0][0].astype(np.float32)

    def context_vector(self, context: RankContext, query_vector: np.ndarray | None) -> np.ndarray | None:
        history = self.history_vector(context.history_item_ids)
        if history is None and query_vector is None:
            return None
        text_dim = self.manifest.encoder.dimension
        return np.concatenate([
            history if history is not None else np.zeros(self.dim, dtype=np.float32),
            self.query_weight * query_vector if query_vector is not None else np.zeros(text_dim, dtype=np.float32),
            self._tail,
        ]).astype(np.float32)

    def score(self, context: RankContext, query_vector: np.ndarray | None, candidates: np.ndarray) -> np.ndarray:
        ctx = self.context_vector(context, query_vector)
        if ctx is None:
            return np.zeros(len(candidates), dtype=np.float32)
        return candidates @ ctx


register_ranker(SequenceRanker.kind, SequenceRanker)
