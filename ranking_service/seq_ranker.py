"""The trained LM sequence ranker (`ranker_kind: lm_seq`), on ONNX Runtime. No gRPC, no batching.

Bundle layout (written by training/lm_bundle.py; see training/lm_model.py for the maths):
  * role `item_tower`: (text_embedding [B, T], id_embedding [B, d]) -> item vector [ê ; t], [B, d + T];
  * role `context`: (history [B, L, d], mask [B, L]) -> unit ĥ [B, d]; a scenario-aware bundle's graph
    also takes `scenario` [B] (int64: 1 + the index in hyperparameter `scenarios`, 0 = none), read
    from the request's `UserContext.scenario` (a name the bundle wasn't trained on reads as none);
  * extra files `item_ids` (JSON list) and `id_embeddings` (float32 [n, d]): the collaborative part of
    every item seen in training. Any other item (new, cold, or upserted later) is represented by its text
    alone, so the catalogue can change without retraining.
The bundle's vector layout (lmrec/bundle/layout.py) names the item vector's trailing coordinates; the
served context is [ĥ ; β·q ; tail], the tail holding the calibrated cold-item bias b at the `text_only`
flag and 0 elsewhere, so score = ĥ·e + β·q·t + b·[text only].
  * extra file `rating_head` (when the manifest lists it; training/rating_export.py): the second head,
    how much the user will like an item (ranking_service/rating_head.py), read from the context graph's ĥ
    of the history (before the event-weight blend, scenario none, as it was fitted), the candidates' e and
    the request's ratings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from lmrec.bundle import Bundle
from lmrec.errors import ArtifactMismatch
from ranking_service.item_store import ItemStore
from ranking_service.onnx_session import RuntimeChoice, new_session, run
from ranking_service.ranker import RankContext, Ranker, RankerOptions, recency_weights
from ranking_service.rating_head import ServedRatingHead


class SequenceRanker(Ranker):
    kind = "lm_seq"

    def __init__(self, bundle: Bundle, store: ItemStore, runtime: RuntimeChoice, options: RankerOptions) -> None:
        manifest = bundle.manifest
        super().__init__(manifest, store, options)
        hp = manifest.hyperparameters
        try:
            self.dim = int(hp["dim"])
            self.max_len = int(hp["max_len"])
            self.query_weight = float(hp["query_weight"]) * float(hp.get("query_scale", 1.0))
            self.cold_bias = float(hp.get("cold_bias", 0.0))
            self.scenarios = {name: n + 1 for n, name in enumerate(hp.get("scenarios") or [])}
        except KeyError as exc:
            raise ArtifactMismatch(f"bundle {manifest.model_version}: hyperparameter {exc} is missing") from None
        self.layout = bundle.layout
        if self.layout.collaborative != self.dim:
            raise ArtifactMismatch(f"bundle {manifest.model_version}: vector_layout.collaborative is "
                                   f"{self.layout.collaborative}, hyperparameter dim is {self.dim}")
        tail_weights = {"text_only": self.cold_bias, "norm_pad": 0.0}
        self._tail = np.array([tail_weights[c] for c in self.layout.trailing], dtype=np.float32)
        threads = options.intra_op_threads
        self._runtime = runtime
        self._items = new_session(bundle.path("item_tower", runtime.precision), runtime, threads, 1)
        self._context = new_session(bundle.path("context", runtime.precision), runtime, threads, 1)
        ids = json.loads(bundle.file("item_ids").read_text())
        self._id_rows = {item_id: row for row, item_id in enumerate(ids)}
        self._id_embeddings = np.load(bundle.file("id_embeddings"))
        if self._id_embeddings.shape != (len(ids), self.dim):
            raise ArtifactMismatch(f"bundle {manifest.model_version}: id_embeddings has shape "
                                   f"{self._id_embeddings.shape}, expected {(len(ids), self.dim)}")
        if manifest.extra_files.get("rating_head"):
            self.rating_head = ServedRatingHead.load(bundle.file("rating_head"), self.dim)

    @property
    def vector_dimension(self) -> int:
        return self.layout.dimension

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

    def text_vectors(self, candidates: np.ndarray) -> np.ndarray:
        return candidates[:, self.dim: self.dim + self.manifest.encoder.dimension]

    def _graph_context(self, histories: np.ndarray, scenario: str = "") -> np.ndarray:
        """[B, L, d] collaborative history vectors -> [B, d] unit ĥ of the context graph."""
        feeds = {"history": np.ascontiguousarray(histories, dtype=np.float32),
                 "mask": np.ones(histories.shape[:2], dtype=np.float32)}
        if self.scenarios:
            feeds["scenario"] = np.full(len(histories), self.scenarios.get(scenario, 0), dtype=np.int64)
        return run(self._context, feeds, self._runtime.on_cuda)[0].astype(np.float32)

    def _interest(self, histories: np.ndarray, weights: np.ndarray, scenario: str = "") -> np.ndarray:
        """[B, L, d] collaborative history vectors and [B, L] event weights -> [B, d] user interest."""
        h = self._graph_context(histories, scenario)
        blend = self.options.event_weight_blend
        if blend:
            w = weights * recency_weights(histories.shape[1])[None]
            mean = (w[..., None] * histories).sum(1)
            mean /= np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)
            h = (1 - blend) * h + blend * mean
            h /= np.maximum(np.linalg.norm(h, axis=-1, keepdims=True), 1e-12)
        return h

    def _known_history(self, context: RankContext) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """The last max_len history items the store knows: their [n, d] vectors, weights and ids."""
        ids = context.history_item_ids[-self.max_len:]
        vectors, known = self.store.gather(ids)
        return vectors[known, : self.dim], context.weights()[-self.max_len:][known], [i for i, k in zip(ids, known) if k]

    def predicted_ratings(self, context: RankContext, candidates: np.ndarray, candidate_ids: Sequence[str]
                          ) -> np.ndarray:
        vectors, _, _ = self._known_history(context)
        # The head was fitted on the graph's ĥ, scenario-blind; an empty history's context is zeros.
        h = self._graph_context(vectors[None])[0] if len(vectors) else np.zeros(self.dim, dtype=np.float32)
        offset = self.rating_head.offset(dict(context.item_ratings))
        return self.rating_head.predict(h, offset, candidates[:, : self.dim], candidate_ids)

    def history_variants(self, context: RankContext, leave_one_out: bool = True
                         ) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
        vectors, weights, ids = self._known_history(context)
        if not len(vectors):
            return None, None, []
        full = self._interest(vectors[None], weights[None], context.scenario)[0]
        if not leave_one_out:
            return full, None, []
        n = len(ids)
        if n == 1:
            return full, np.zeros((1, self.dim), dtype=np.float32), ids
        w = min(n, self.options.explain_window)
        keep = np.ones((w, n), dtype=bool)  # row r: every item but the (n - w + r)-th, in order
        keep[np.arange(w), np.arange(n - w, n)] = False
        variants = self._interest(np.broadcast_to(vectors, (w, n, self.dim))[keep].reshape(w, n - 1, self.dim),
                                  np.broadcast_to(weights, (w, n))[keep].reshape(w, n - 1), context.scenario)
        return full, variants, ids[n - w:]

    def combine(self, interest: np.ndarray | None, query_vector: np.ndarray | None) -> np.ndarray | None:
        if interest is None and query_vector is None:
            return None
        text_dim = self.manifest.encoder.dimension
        rows = 1 if interest is None or interest.ndim == 1 else len(interest)
        parts = [
            interest if interest is not None else np.zeros(self.dim, dtype=np.float32),
            self.query_weight * query_vector if query_vector is not None else np.zeros(text_dim, dtype=np.float32),
            self._tail,
        ]
        if interest is not None and interest.ndim == 2:
            parts = [interest] + [np.broadcast_to(p, (rows, len(p))) for p in parts[1:]]
        return np.concatenate(parts, axis=-1).astype(np.float32)
