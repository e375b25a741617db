"""Item-based kNN with shrunk cosine similarity over the binary history matrix."""

from __future__ import annotations

import numpy as np

from training.protocols import Recommender
from training.split import Phase, SplitData


class ItemKNN(Recommender):
    """score(u, j) = sum over the user's items i of sim(i, j), keeping each item's `neighbours` best.

    sim(i, j) = |U_i & U_j| / (sqrt(|U_i|) sqrt(|U_j|) + shrink); the shrink term damps similarities
    resting on few co-occurrences. The similarity matrix is dense (n_items^2 floats), fine up to a few
    ten thousand items.
    """

    name = "itemknn"

    def __init__(self, neighbours: int = 100, shrink: float = 10.0, seed: int = 0) -> None:
        self.neighbours = neighbours
        self.shrink = shrink
        self.seed = seed
        self._sim: np.ndarray | None = None
        self._history = None

    @staticmethod
    def param_grid(quick: bool = False) -> list[dict]:
        if quick:
            return [{"neighbours": 20, "shrink": 10.0}]
        return [{"neighbours": k, "shrink": s} for k in (20, 50, 100, 200, 400) for s in (0.0, 10.0, 50.0)]

    def fit(self, data: SplitData, phase: Phase) -> None:
        x = data.history_matrix(phase)
        self._history = x
        co = (x.T @ x).toarray().astype(np.float32)
        norms = np.sqrt(np.diag(co))
        sim = co / (np.outer(norms, norms) + self.shrink + 1e-9)
        np.fill_diagonal(sim, 0.0)
        k = min(self.neighbours, sim.shape[0] - 1)
        if 0 < k < sim.shape[0] - 1:
            # Keep, per target column j, the k source items most similar to it.
            drop = np.argpartition(-sim, k, axis=0)[k:, :]
            np.put_along_axis(sim, drop, 0.0, axis=0)
        self._sim = sim

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return np.asarray(self._history[user_idx] @ self._sim, dtype=np.float32)
