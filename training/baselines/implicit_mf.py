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

from training.baselines.itemknn import MIN_POSITIVE_WEIGHT, check_weighting, recency_weighted_history, weigh_interactions
from training.protocols import Recommender
from training.split import Phase, SplitData

# implicit's own BM25 defaults (its last.fm example weighs the ALS confidence this way).
ALS_BM25_K1, ALS_BM25_B = 100.0, 0.8


class _ImplicitMF(Recommender):
    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._user_factors: np.ndarray | None = None
        self._item_factors: np.ndarray | None = None

    def _build(self):
        raise NotImplementedError

    def _interactions(self, data: SplitData, phase: Phase):
        """The user x item matrix handed to implicit's `fit`; the binary history unless overridden."""
        return data.history_matrix(phase)

    def fit(self, data: SplitData, phase: Phase) -> None:
        interactions = self._interactions(data, phase)
        with threadpool_limits(limits=1, user_api="blas"):
            model = self._build()
            model.fit(interactions, show_progress=False)
        self._user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self._item_factors = np.asarray(model.item_factors, dtype=np.float32)

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return self._user_factors[user_idx] @ self._item_factors.T


class ALS(_ImplicitMF):
    """Weighted ALS (Hu, Koren, Volinsky 2008) with confidence 1 + alpha r_ui on observed items.

    r_ui is 1 for every history item by default. Two standard reshapings of it, tuned on validation:
      * `weighting="bm25"` (or "tfidf"): r is BM25/TF-IDF weighted as in implicit's last.fm example
        (item x user orientation, K1=100, B=0.8), so blockbusters and prolific users weigh less;
      * `recency_half_life` > 0: r_ui = 2^(-p/half_life) for the history item p positions from the end
        of u's sequence (floored at 1e-6), so the user factors follow the latest items while older ones
        stay positives with confidence ~1. Leave-one-out by time asks for the next item, which is much
        closer to the latest ones. With both, the decayed matrix is BM25 weighted.
    Defaults (no weighting, no decay) reproduce the plain binary-confidence ALS.
    """

    name = "als"

    def __init__(self, factors: int = 64, regularization: float = 0.1, alpha: float = 1.0,
                 iterations: int = 15, weighting: str = "none", recency_half_life: float = 0.0,
                 seed: int = 0) -> None:
        super().__init__(seed)
        self.factors, self.regularization, self.alpha, self.iterations = factors, regularization, alpha, iterations
        self.weighting, self.recency_half_life = check_weighting(weighting), recency_half_life

    @staticmethod
    def param_grid(quick: bool = False) -> list[dict]:
        if quick:
            return [{"factors": 8, "regularization": 0.1, "alpha": 1.0, "iterations": 3}]
        # Brackets reg/alpha around the first wide runs' pick and adds the recency half-life, which is what
        # moves validation NDCG@10; BM25 never won, so factors=256 only (docs/tuning.md#als-grid).
        plain = [{"factors": f, "regularization": r, "alpha": a, "iterations": 15, "weighting": "none",
                  "recency_half_life": h}
                 for f in (128, 256, 512) for r in (3.0, 10.0, 30.0) for a in (2.0, 5.0, 10.0, 20.0)
                 for h in (0.0, 5.0, 10.0)]
        bm25 = [{"factors": 256, "regularization": r, "alpha": a, "iterations": 15, "weighting": "bm25",
                 "recency_half_life": h}
                for r in (3.0, 10.0, 30.0) for a in (2.0, 5.0, 10.0, 20.0) for h in (0.0, 5.0, 10.0)]
        return plain + bm25

    def _interactions(self, data: SplitData, phase: Phase):
        if self.recency_half_life > 0:
            r = recency_weighted_history(data, phase, self.recency_half_life)
        else:
            r = data.history_matrix(phase)
        if self.weighting != "none":
            r = weigh_interactions(r, self.weighting, k1=ALS_BM25_K1, b=ALS_BM25_B)
            # implicit reads an entry <= 0 as a negative; BM25's IDF can reach 0 for a user holding almost
            # every item, so keep every history item a (minimally confident) positive.
            r.data = np.maximum(r.data, MIN_POSITIVE_WEIGHT)
        return r

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
