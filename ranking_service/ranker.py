"""Rankers: turn a request context and candidate representations into scores. No gRPC, no batching.

A bundle's manifest names its `ranker_kind`; ranking_service/ranker_kinds.py maps kinds to builders.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lmrec.bundle import Manifest
from ranking_service.item_store import ItemStore
from ranking_service.rating_head import ServedRatingHead, combined_scores
from ranking_service.settings import RankingSettings


# Rank-time weight of a history item by how recent it is, times its event weight (zero-shot ranker and
# the event-weighted blend of the trained one).
RECENCY_DECAY = 0.97
# The most recent negatives that push similar candidates down.
NEGATIVE_WINDOW = 20


@dataclass(frozen=True)
class RankContext:
    user_id: str
    history_item_ids: list[str]
    query: str = ""
    scenario: str = ""
    # Per history item, the strength of its event (empty: 1 each).
    history_weights: tuple[float, ...] = ()
    negative_item_ids: tuple[str, ...] = ()
    # Per negative, its strength (empty: 1 each).
    negative_weights: tuple[float, ...] = ()
    # The user's explicit ratings, (item id, rating): the rating head's user offset reads them.
    item_ratings: tuple[tuple[str, float], ...] = ()
    # Weight of the predicted rating in the scores Rank returns (0: next-item scores alone).
    rating_weight: float = 0.0

    def weights(self) -> np.ndarray:
        if not self.history_weights:
            return np.ones(len(self.history_item_ids), dtype=np.float32)
        return np.asarray(self.history_weights, dtype=np.float32)


@dataclass(frozen=True)
class RankerOptions:
    """Serving-time knobs of every ranker (declared once, in RankingSettings; passed in by the worker).

    Attributes:
        negative_penalty: a candidate whose text similarity to one of the user's recent negatives is z
            standard deviations above the candidates' mean loses penalty·z·strength standard deviations
            of score (the largest over the negatives).
        event_weight_blend: share of the trained ranker's user vector taken from the event-weighted,
            recency-decayed mean of the history's item vectors (the sequence model itself reads order,
            not weights); the zero-shot ranker's user vector is that weighted mean already.
        explain_window: the most recent history items that leave-one-out attribution tries.
        intra_op_threads: ONNX Runtime threads of the ranker's own graphs.
    """

    negative_penalty: float = RankingSettings.model_fields["negative_penalty"].default
    event_weight_blend: float = RankingSettings.model_fields["event_weight_blend"].default
    explain_window: int = RankingSettings.model_fields["explain_window"].default
    intra_op_threads: int = 1

    @classmethod
    def graphs_only(cls) -> RankerOptions:
        """No serving-time adjustment: the score is the exported graphs' (export parity checks these)."""
        return cls(negative_penalty=0.0, event_weight_blend=0.0)


@dataclass(frozen=True)
class Attributions:
    """Per candidate: the history position whose removal lowers its score most (-1: no history), by how
    much, and the free-text request's part of its score."""

    history_index: np.ndarray
    history_drop: np.ndarray
    query_part: np.ndarray
    history_item_ids: list[str]


class Ranked(NamedTuple):
    """What `Ranker.rank` returns for the candidates, in their order."""

    scores: np.ndarray
    attributions: Attributions | None  # with `explain`
    # With a rating head and candidate ids: the rating the user is predicted to give each candidate (0 for
    # unknown ones); None otherwise.
    predicted_ratings: np.ndarray | None


def recency_weights(n: int) -> np.ndarray:
    return RECENCY_DECAY ** np.arange(n - 1, -1, -1, dtype=np.float32)


class Ranker(ABC):
    kind: str
    # The bundle's second head (how much the user will like an item); None: the bundle has none.
    rating_head: ServedRatingHead | None = None

    def __init__(self, manifest: Manifest, store: ItemStore, options: RankerOptions | None = None) -> None:
        self.manifest = manifest
        self.store = store
        self.options = options or RankerOptions()

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

    def text_vectors(self, candidates: np.ndarray) -> np.ndarray:
        """The unit LM text part of candidate representations: what item-to-item similarity uses."""
        return candidates

    @abstractmethod
    def history_variants(self, context: RankContext, leave_one_out: bool = True
                         ) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
        """The user-interest part of the context (None without usable history), and with `leave_one_out`
        the same with each of the last `options.explain_window` history items left out in turn ([L, ...];
        else None) and those L item ids."""

    @abstractmethod
    def combine(self, interest: np.ndarray | None, query_vector: np.ndarray | None) -> np.ndarray | None:
        """Context vector(s) from interest vector(s) ([..., d] or None) and the query vector (or None)."""

    def context_vector(self, context: RankContext, query_vector: np.ndarray | None) -> np.ndarray | None:
        """Query vector for retrieval, or None when the context carries no signal (cold user, no query)."""
        return self.combine(self.history_variants(context, leave_one_out=False)[0], query_vector)

    def score(self, context: RankContext, query_vector: np.ndarray | None, candidates: np.ndarray) -> np.ndarray:
        """Scores for candidate representations (rows of `candidates`); higher is better."""
        return self.rank(context, query_vector, candidates, explain=False)[0]

    def rank(self, context: RankContext, query_vector: np.ndarray | None, candidates: np.ndarray,
             explain: bool, candidate_ids: Sequence[str] | None = None, known: np.ndarray | None = None) -> Ranked:
        """Scores, with `explain` their attributions, from one pass over the history; with a rating head and
        `candidate_ids`, also the predicted ratings, and with `context.rating_weight` > 0 the scores are
        the blend combined_scores(next-item scores, predicted ratings) over the `known` candidates (unknown
        ones, whose rows of `candidates` mean nothing, score -inf)."""
        interest, variants, ids = self.history_variants(context, leave_one_out=explain)
        ctx = self.combine(interest, query_vector)
        base = (candidates @ ctx).astype(np.float32) if ctx is not None else np.zeros(len(candidates), np.float32)
        scores = self.penalise_negatives(context, candidates, base)
        predicted = None
        if self.rating_head is not None and candidate_ids is not None:
            known = np.ones(len(candidates), dtype=bool) if known is None else known
            predicted = np.where(known, self.predicted_ratings(context, candidates, candidate_ids), 0.0)
            predicted = predicted.astype(np.float32)
            if context.rating_weight > 0:
                scores = combined_scores(np.where(known, scores, -np.inf), predicted,
                                         context.rating_weight).astype(np.float32)
        found = self._attributions(interest, variants, ids, query_vector, candidates, base) if explain else None
        return Ranked(scores, found, predicted)

    def predicted_ratings(self, context: RankContext, candidates: np.ndarray, candidate_ids: Sequence[str]
                          ) -> np.ndarray:
        """The rating head's prediction for each candidate (rankers with a `rating_head` implement it)."""
        raise NotImplementedError(f"ranker kind {self.kind} has no rating head")

    def penalise_negatives(self, context: RankContext, candidates: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if not context.negative_item_ids or not self.options.negative_penalty or len(candidates) < 2:
            return scores
        negatives, known = self.store.gather(list(context.negative_item_ids[-NEGATIVE_WINDOW:]))
        if not known.any():
            return scores
        strength = (np.asarray(context.negative_weights[-NEGATIVE_WINDOW:], dtype=np.float32)
                    if context.negative_weights else np.ones(len(known), dtype=np.float32))[known]
        similarity = self.text_vectors(candidates) @ self.text_vectors(negatives[known]).T  # [C, N]
        # In standard deviations on both sides, so the knob means the same whatever the model's score scale:
        # a candidate 2 sd closer to a negative than the average candidate loses 2·penalty·strength sd.
        z = (similarity - similarity.mean(0)) / np.where(similarity.std(0) > 0, similarity.std(0), 1.0)
        closeness = (np.maximum(z, 0.0) * strength).max(axis=1)
        spread = float(scores.std()) or 1.0
        return (scores - self.options.negative_penalty * spread * closeness).astype(np.float32)

    def attribute(self, context: RankContext, query_vector: np.ndarray | None,
                  candidates: np.ndarray) -> Attributions:
        """Leave-one-out attribution over the context's history items, plus the query's part of each score."""
        return self.rank(context, query_vector, candidates, explain=True)[1]

    def _attributions(self, interest: np.ndarray | None, variants: np.ndarray | None, ids: list[str],
                      query_vector: np.ndarray | None, candidates: np.ndarray, base: np.ndarray) -> Attributions:
        """`base`: the scores before the negative penalty, which attributions explain."""
        n = len(candidates)
        index = np.full(n, -1, dtype=np.int64)
        drop = np.zeros(n, dtype=np.float32)
        if variants is not None and len(ids):
            without = self.combine(variants, query_vector)
            drops = base[:, None] - candidates @ without.T  # [C, L]
            index = drops.argmax(axis=1)
            drop = drops[np.arange(n), index].astype(np.float32)
        query_part = np.zeros(n, dtype=np.float32)
        if query_vector is not None:
            query_part = self.query_part(interest, query_vector, candidates, base)
        return Attributions(index, drop, query_part, ids)

    def query_part(self, interest: np.ndarray | None, query_vector: np.ndarray, candidates: np.ndarray,
                   base: np.ndarray) -> np.ndarray:
        """The free-text request's share of each score: for a linear context, the score less the score
        without the query."""
        no_query = self.combine(interest, None)
        return (base - (candidates @ no_query if no_query is not None else 0.0)).astype(np.float32)


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

    def history_variants(self, context: RankContext, leave_one_out: bool = True
                         ) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
        ids = context.history_item_ids[-self.HISTORY_WINDOW:]
        vectors, known = self.store.gather(ids)
        weights = context.weights()[-self.HISTORY_WINDOW:] * recency_weights(len(ids)) * known
        if not (weights > 0).any():
            return None, None, []
        keep = np.flatnonzero(weights > 0)
        terms = weights[keep, None] * vectors[keep]
        total = terms.sum(0)
        if not leave_one_out:
            return normalize(total), None, []
        tried = keep[-self.options.explain_window:]
        variants = np.stack([normalize(total - t) for t in terms[-len(tried):]])
        return normalize(total), variants, [ids[i] for i in tried]

    def combine(self, interest: np.ndarray | None, query_vector: np.ndarray | None) -> np.ndarray | None:
        if query_vector is None:
            return interest
        if interest is None:
            return normalize(query_vector)
        mixed = self.QUERY_WEIGHT * query_vector + (1 - self.QUERY_WEIGHT) * interest
        return mixed / np.maximum(np.linalg.norm(mixed, axis=-1, keepdims=True), 1e-12)

    def query_part(self, interest: np.ndarray | None, query_vector: np.ndarray, candidates: np.ndarray,
                   base: np.ndarray) -> np.ndarray:
        # The score is (Q·q·v + (1-Q)·h·v) / |Q·q + (1-Q)·h|: the query's term of that sum, exactly.
        if interest is None:
            return base.astype(np.float32)
        mixed = self.QUERY_WEIGHT * query_vector + (1 - self.QUERY_WEIGHT) * interest
        return (self.QUERY_WEIGHT * (candidates @ query_vector) / max(float(np.linalg.norm(mixed)), 1e-12)
                ).astype(np.float32)
