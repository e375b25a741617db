"""ALS and BPR matrix factorisation from the `implicit` library (CPU build).

implicit 0.7 takes the user x item CSR in `fit` (0.4 and earlier took item x user). The BLAS pool is
pinned to one thread during fit because implicit's own threads already use the cores and it warns that
nested OpenBLAS threading slows ALS down.
"""

from __future__ import annotations

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from threadpoolctl import threadpool_limits

from training.protocols import Recommender
from training.split import Phase, SplitData


class _ImplicitMF(Recommender):
    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._user_factors: np.ndarray | None = None
        self._item_factors: np.ndarray | None = None

    def _build(self):
        raise NotImplementedError

    def fit(self, data: SplitData, phase: Phase) -> None:
        with threadpool_limits(limits=1, user_api="blas"):
            model = self._build()
            model.fit(data.history_matrix(phase), show_progress=False)
        self._user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self._item_factors = np.asarray(model.item_factors, dtype=np.float32)

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return self._user_factors[user_idx] @ self._item_factors.T


class ALS(_ImplicitMF):
    """Weighted ALS (Hu, Koren, Volinsky 2008) with confidence 1 + alpha on observed items."""

    name = "als"

    def __init__(self, factors: int = 64, regularization: float = 0.1, alpha: float = 1.0,
                 iterations: int = 15, seed: int = 0) -> None:
        super().__init__(seed)
        self.factors, self.regularization, self.alpha, self.iterations = factors, regularization, alpha, iterations

    @staticmethod
    def param_grid(quick: bool = False) -> list[dict]:
        if quick:
            return [{"factors": 8, "regularization": 0.1, "alpha": 1.0, "iterations": 3}]
        # Widened after the first run picked factors=256, alpha=5 at the grid's edges.
        return [{"factors": f, "regularization": r, "alpha": a, "iterations": 15}
                for f in (64, 128, 256, 512) for r in (1.0, 10.0, 50.0) for a in (1.0, 5.0, 20.0)]

    def _build(self):
        return AlternatingLeastSquares(factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                                       iterations=self.iterations, random_state=self.seed, num_threads=0)


class BPR(_ImplicitMF):
    """Bayesian personalised ranking (Rendle et al. 2009) with SGD on sampled (user, pos, neg)."""

    name = "bpr"

    def __init__(self, factors: int = 64, learning_rate: float = 0.05, regularization: float = 0.01,
                 iterations: int = 100, seed: int = 0) -> None:
        super().__init__(seed)
        self.factors, self.learning_rate = factors, learning_rate
        self.regularization, self.iterations = regularization, iterations

    @staticmethod
    def param_grid(quick: bool = False) -> list[dict]:
        if quick:
            return [{"factors": 8, "learning_rate": 0.05, "regularization": 0.01, "iterations": 5}]
        # Widened after the first run picked learning_rate=0.01, regularization=0.001 at the grid's edges.
        return [{"factors": f, "learning_rate": lr, "regularization": r, "iterations": 100}
                for f in (64, 128) for lr in (0.005, 0.01, 0.02) for r in (0.0001, 0.001, 0.01)]

    def _build(self):
        # One thread: BPR's parallel SGD is Hogwild, so more threads would make results seed-unstable.
        return BayesianPersonalizedRanking(factors=self.factors, learning_rate=self.learning_rate,
                                           regularization=self.regularization, iterations=self.iterations,
                                           random_state=self.seed, num_threads=1)
