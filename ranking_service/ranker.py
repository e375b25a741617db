"""Rankers: turn a request context and candidate representations into scores. No gRPC, no batching.

A bundle's manifest names its `ranker_kind`; `RANKERS` maps kinds to builders, so a trained ranker plugs
in by registering itself without the serving layer changing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmrec.errors import ArtifactMismatch
from lmrec.manifest import Manifest
from ranking_service.item_store import ItemStore
from ranking_service.onnx_session import RuntimeChoice


@dataclass(frozen=True)
class RankContext:
    user_id: str
    history_item_ids: list[str]
    query: str = ""
    scenario: str = ""


class Ranker(ABC):
    kind: str

    def __init__(self, manifest: Manifest, store: ItemStore) -> None:
        self.manifest = manifest
        self.store = store

    @property
    def model_version(self) -> str:
        return self.manifest.model_version

    @property
    def vector_dimension(self) -> int:
        """Length of item and context vectors (what the retrieval index must be built with)."""
        return self.manifest.encoder.dimension

    def item_vectors(self, text_vectors: np.ndarray, item_ids: list[str] | None = None) -> np.ndarray:
        """Candidate-side representation (also the retrieval vector) from the item text's LM vector;
        trained rankers add what they learnt about known `item_ids`."""
        return text_vectors

    def text_only(self, item_ids: list[str]) -> list[bool] | None:
        """Per item, whether the model knows it only by its text (no learnt id representation); None
        for rankers that represent every item the same way."""
        return None

    @abstractmethod
    def context_vector(self, context: RankContext, query_vector: np.ndarray | None) -> np.ndarray | None:
        """Unit query vector for retrieval, or None when the context carries no signal (cold user, no query)."""

    @abstractmethod
    def score(self, context: RankContext, query_vector: np.ndarray | None, candidates: np.ndarray) -> np.ndarray:
        """Scores for candidate representations (rows of `candidates`); higher is better."""


def normalize(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


class ZeroShotRanker(Ranker):
    """Cosine between the context and item LM embeddings; no training needed.

    The context blends the free-text query with a recency-weighted mean of history item embeddings;
    the query dominates because an explicit request states intent better than past behaviour does.
    """

    kind = "zero_shot"
    QUERY_WEIGHT = 0.75
    HISTORY_WINDOW = 50
    RECENCY_DECAY = 0.97

    def history_vector(self, history_item_ids: list[str]) -> np.ndarray | None:
        recent = history_item_ids[-self.HISTORY_WINDOW:]
        vectors, known = self.store.gather(recent)
        if not known.any():
            return None
        weights = self.RECENCY_DECAY ** np.arange(len(recent) - 1, -1, -1, dtype=np.float32)
        weights = weights * known
        return normalize((weights[:, None] * vectors).sum(0))

    def context_vector(self, context: RankContext, query_vector: np.ndarray | None) -> np.ndarray | None:
        history = self.history_vector(context.history_item_ids)
        if query_vector is None:
            return history
        if history is None:
            return normalize(query_vector)
        return normalize(self.QUERY_WEIGHT * query_vector + (1 - self.QUERY_WEIGHT) * history)

    def score(self, context: RankContext, query_vector: np.ndarray | None, candidates: np.ndarray) -> np.ndarray:
        ctx = self.context_vector(context, query_vector)
        if ctx is None:
            return np.zeros(len(candidates), dtype=np.float32)
        return candidates @ ctx


RankerBuilder = Callable[[Path, Manifest, ItemStore, RuntimeChoice, dict], Ranker]
RANKERS: dict[str, RankerBuilder] = {
    "zero_shot": lambda bundle_dir, manifest, store, runtime, options: ZeroShotRanker(manifest, store),
}


def register_ranker(kind: str, builder: RankerBuilder) -> None:
    RANKERS[kind] = builder


def build_ranker(bundle_dir: Path, manifest: Manifest, store: ItemStore, runtime: RuntimeChoice,
                 options: dict | None = None) -> Ranker:
    builder = RANKERS.get(manifest.ranker_kind)
    if builder is None:
        raise ArtifactMismatch(
            f"bundle {manifest.model_version} needs ranker kind '{manifest.ranker_kind}'; "
            f"this ranking worker knows {sorted(RANKERS)}"
        )
    return builder(bundle_dir, manifest, store, runtime, options or {})
