"""The rating head as served: numpy only, read from a bundle's `rating_head.npz` (training/rating_export.py
writes it; training/rating_head.py fits it and explains the model).

    r̂ = clip(μ + b_i + a·δ_u + MLP([ĥ, e, ĥ⊙e, δ_u]), rating bounds)

ĥ: the context graph's unit context of the history (before the serving event-weight blend, scenario none,
as the head was fitted); e: an item's collaborative vector (the first `dim` coordinates of its served
vector); b_i: the item's bias, keyed by item id (0 for items the training ratings never reached, e.g.
upserted later); δ_u: the shrunk mean residual of the user's own ratings, computed per request.
`combined_scores` blends the two objectives of a request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmrec.errors import ArtifactMismatch

RATING_HEAD_FILE = "rating_head.npz"
_ARRAYS = ("mu", "item_bias", "user_shrinkage", "user_weight", "w1", "b1", "w2", "b2", "bounds")


@dataclass
class RatingHead:
    """The fitted head as numpy arrays, indexed like its item table (item_bias[i] is the i-th item's).

    w1 reads the raw features [ĥ, e, ĥ⊙e, δ] (training-time standardisation folded in); an empty b1 means
    no MLP (μ + b_i + a·δ_u).
    """

    mu: float
    item_bias: np.ndarray  # [n_items]
    user_shrinkage: float
    user_weight: float  # a
    w1: np.ndarray  # [3d + 1, hidden]
    b1: np.ndarray  # [hidden]
    w2: np.ndarray  # [hidden]
    b2: float
    bounds: tuple[float, float]

    def offsets(self, histories: list[np.ndarray], ratings: list[np.ndarray]) -> np.ndarray:
        """δ per history: the shrunk mean residual of its rated items (0 with no ratings)."""
        return np.array([self.offset(h, r) for h, r in zip(histories, ratings)])

    def offset(self, items: np.ndarray, ratings: np.ndarray) -> float:
        """δ of one history: `items` index item_bias, `ratings` are aligned with them (NaN: not rated)."""
        rated = ~np.isnan(ratings)
        return self.offset_of(ratings[rated], self.item_bias[items[rated]])

    def offset_of(self, ratings: np.ndarray, item_bias: np.ndarray) -> float:
        """δ from the ratings and their items' biases: sum(r - μ - b) / (n + shrinkage)."""
        resid = np.asarray(ratings, dtype=np.float64) - self.mu - item_bias
        return float(resid.sum() / (len(resid) + self.user_shrinkage))

    def predict_pairs(self, contexts: np.ndarray, offsets: np.ndarray, items: np.ndarray,
                      item_vectors: np.ndarray) -> np.ndarray:
        """Ratings of items[n] (rows of `item_vectors`) for the history with contexts[n], offsets[n]."""
        return self.predict_rows(contexts, offsets, item_vectors[items], self.item_bias[items])

    def predict_rows(self, contexts: np.ndarray, offsets: np.ndarray, vectors: np.ndarray,
                     item_bias: np.ndarray) -> np.ndarray:
        """Ratings of the items with collaborative `vectors` [N, d] and `item_bias` [N] for the histories with
        `contexts` [N, d] (or one [d], broadcast) and `offsets` [N] (or a scalar)."""
        contexts = np.broadcast_to(np.asarray(contexts, dtype=np.float64), vectors.shape)
        offsets = np.broadcast_to(np.asarray(offsets, dtype=np.float64), (len(vectors),))
        out = self.mu + item_bias + self.user_weight * offsets
        if len(self.b1):
            x = np.hstack([contexts, vectors, contexts * vectors, offsets[:, None]])
            out = out + np.maximum(x @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2
        return np.clip(out, *self.bounds)

    def predict(self, contexts: np.ndarray, offsets: np.ndarray, item_vectors: np.ndarray,
                chunk: int = 32) -> np.ndarray:
        """[B, M] ratings of every row of `item_vectors` (M = the item table) for B histories."""
        base = self.mu + self.item_bias[None] + self.user_weight * offsets[:, None]
        if not len(self.b1):
            return np.clip(base, *self.bounds)
        d = contexts.shape[1]
        w_h, w_v, w_hv, w_o = self.w1[:d], self.w1[d:2 * d], self.w1[2 * d:3 * d], self.w1[3 * d]
        item_part = item_vectors @ w_v + self.b1  # [M, H]
        out = np.empty_like(base)
        for s in range(0, len(contexts), chunk):
            h, o = contexts[s:s + chunk], offsets[s:s + chunk]
            # (h ⊙ v)·W = v·(h[:, None] ⊙ W): the interaction term without a [B, M, 3d] feature tensor
            pre = (item_part[None] + (h @ w_h + o[:, None] * w_o)[:, None]
                   + np.einsum("md,bdk->bmk", item_vectors, h[:, :, None] * w_hv[None]))
            out[s:s + chunk] = base[s:s + chunk] + np.maximum(pre, 0.0) @ self.w2 + self.b2
        return np.clip(out, *self.bounds)

    def state(self) -> dict[str, np.ndarray]:
        """Every array and scalar, for np.savez; `from_state` inverts it."""
        return {"mu": np.float64(self.mu), "item_bias": self.item_bias,
                "user_shrinkage": np.float64(self.user_shrinkage), "user_weight": np.float64(self.user_weight),
                "w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": np.float64(self.b2), "bounds": np.array(self.bounds)}

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> RatingHead:
        return cls(float(state["mu"]), np.asarray(state["item_bias"]), float(state["user_shrinkage"]),
                   float(state["user_weight"]), np.asarray(state["w1"]), np.asarray(state["b1"]),
                   np.asarray(state["w2"]), float(state["b2"]), tuple(np.asarray(state["bounds"]).tolist()))


def write_rating_head(path: Path, head: RatingHead, item_ids: Sequence[str]) -> None:
    """Saves `head` with its item table's ids (item_bias[i] belongs to item_ids[i])."""
    if len(item_ids) != len(head.item_bias):
        raise ValueError(f"{len(item_ids)} item ids for {len(head.item_bias)} item biases")
    np.savez(path, item_ids=np.array(list(item_ids), dtype=np.str_), **head.state())


class ServedRatingHead:
    """A bundle's head with its item biases keyed by item id: what the ranking tier predicts with."""

    def __init__(self, head: RatingHead, item_ids: Sequence[str], dim: int) -> None:
        if len(head.b1) and head.w1.shape[0] != 3 * dim + 1:
            raise ArtifactMismatch(f"rating head reads {head.w1.shape[0]} features; a {dim}-wide trunk gives "
                                   f"{3 * dim + 1}")
        self.head = head
        self.dim = dim
        self._rows = {item_id: row for row, item_id in enumerate(item_ids)}

    @classmethod
    def load(cls, path: Path, dim: int) -> ServedRatingHead:
        try:
            with np.load(path, allow_pickle=False) as saved:
                state = {name: saved[name] for name in (*_ARRAYS, "item_ids")}
        except (OSError, KeyError, ValueError) as exc:
            raise ArtifactMismatch(f"{path}: not a rating head ({exc})") from None
        head = RatingHead.from_state(state)
        if len(state["item_ids"]) != len(head.item_bias):
            raise ArtifactMismatch(f"{path}: {len(state['item_ids'])} item ids for {len(head.item_bias)} biases")
        return cls(head, [str(i) for i in state["item_ids"]], dim)

    def item_bias(self, item_ids: Sequence[str]) -> np.ndarray:
        """b_i per id; 0 for an item the head has no bias for (new, cold, upserted after training)."""
        rows = np.array([self._rows.get(i, -1) for i in item_ids], dtype=np.int64)
        return np.where(rows >= 0, self.head.item_bias[np.maximum(rows, 0)], 0.0) if len(rows) else np.zeros(0)

    def offset(self, ratings: Mapping[str, float]) -> float:
        """δ_u of the user whose ratings (item id -> rating) are given; 0 with none."""
        ids = sorted(ratings)  # a fixed summation order: the same ratings give the same δ
        return self.head.offset_of(np.array([ratings[i] for i in ids], dtype=np.float64), self.item_bias(ids))

    def predict(self, context: np.ndarray, offset: float, vectors: np.ndarray, item_ids: Sequence[str]) -> np.ndarray:
        """Predicted ratings of the items with collaborative `vectors` [N, dim] for one context ĥ [dim]."""
        return self.head.predict_rows(context, offset, np.asarray(vectors, dtype=np.float64),
                                      self.item_bias(item_ids))


def combined_scores(next_item_scores: np.ndarray, rating_pred: np.ndarray, weight: float) -> np.ndarray:
    """Per request (row): z(next-item score) + weight · z(predicted rating), each standardised over the
    row's candidates, so `weight` means the same whatever either head's scale. Weight 0 keeps the
    next-item order exactly; -inf (masked) candidates stay -inf.
    """
    next_item_scores = np.asarray(next_item_scores, dtype=np.float64)
    live = np.isfinite(next_item_scores)
    out = np.where(live, _standardise(next_item_scores, live), -np.inf)
    if weight:
        out = np.where(live, out + weight * _standardise(np.asarray(rating_pred, dtype=np.float64), live), -np.inf)
    return out


def _standardise(x: np.ndarray, live: np.ndarray) -> np.ndarray:
    """Row-wise z-scores over the `live` entries (a constant row becomes 0)."""
    n = np.maximum(live.sum(-1, keepdims=True), 1)
    mean = np.where(live, x, 0.0).sum(-1, keepdims=True) / n
    var = np.where(live, (x - mean) ** 2, 0.0).sum(-1, keepdims=True) / n
    std = np.sqrt(var)
    return np.where(live, (x - mean) / np.where(std > 0, std, 1.0), 0.0)
