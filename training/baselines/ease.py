"""EASE (Steck, 2019): closed-form item-item linear autoencoder with a zero diagonal."""

from __future__ import annotations

import numpy as np

from training.protocols import Recommender
from training.split import Phase, SplitData


class EASE(Recommender):
    """B = I - P diagMat(1 / diag(P)), P = (X^T X + lambda I)^-1; scores = X B. Dense n_items^2."""

    name = "ease"

    def __init__(self, l2: float = 500.0, seed: int = 0) -> None:
        self.l2 = l2
        self.seed = seed
        self._b: np.ndarray | None = None
        self._history = None

    @staticmethod
    def param_grid(quick: bool = False) -> list[dict]:
        if quick:
            return [{"l2": 100.0}]
        # 10 and 20 since Amazon Beauty picked 50, the old grid's lowest value.
        return [{"l2": v} for v in (10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)]

    def fit(self, data: SplitData, phase: Phase) -> None:
        x = data.history_matrix(phase)
        self._history = x
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.l2
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)
        np.fill_diagonal(b, 0.0)
        self._b = b.astype(np.float32)

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return np.asarray(self._history[user_idx] @ self._b, dtype=np.float32)
