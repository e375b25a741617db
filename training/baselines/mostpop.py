"""Most popular items in the phase's history: the floor every personalised model must clear."""

from __future__ import annotations

import numpy as np

from training.protocols import Recommender
from training.split import Phase, SplitData


class MostPop(Recommender):
    name = "mostpop"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._popularity: np.ndarray | None = None

    @staticmethod
    def param_grid(quick: bool = False) -> list[dict]:
        return [{}]

    def fit(self, data: SplitData, phase: Phase) -> None:
        self._popularity = data.item_popularity(phase).astype(np.float32)

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self._popularity, (len(user_idx), len(self._popularity))).copy()
