"""Biased matrix factorisation for explicit ratings: the rating baseline the rating head is measured against.

r̂(u, i) = μ + b_u + b_i + p_u·q_i, fitted by alternating least squares: with the items fixed each user's
[p_u; b_u] is one ridge regression on its ratings, and the other way round. ALS rather than SGD because
each sweep is exact and seeded, so the only schedule to tune is the number of sweeps. Factors are
penalised by λ·n (ALS-WR, Zhou et al. 2008: heavy raters need no less shrinkage per rating), biases by
a fixed `bias_reg` (a user with 3 ratings should be pulled harder to 0 than one with 300).

Not a harness `Recommender`: it predicts a rating for a (user, item) pair, not a ranking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace

import numpy as np


@dataclass(frozen=True)
class BiasedMFConfig:
    factors: int = 16
    reg: float = 0.1  # on factors, times the row's rating count
    bias_reg: float = 5.0  # on biases, fixed
    epochs: int = 15  # ALS sweeps (one user step + one item step)
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Ratings:
    """Explicit ratings as parallel arrays of dense indices."""

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        if not len(self.users) == len(self.items) == len(self.values):
            raise ValueError("users, items and values must have the same length")


@dataclass
class BiasedMF:
    """A fitted model: every array is indexed by the dense user / item index it was fitted with."""

    mu: float
    user_bias: np.ndarray  # [n_users]
    item_bias: np.ndarray  # [n_items]
    user_factors: np.ndarray  # [n_users, k]
    item_factors: np.ndarray  # [n_items, k]
    bounds: tuple[float, float]  # the training ratings' range; predictions are clipped to it

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Ratings of (users[n], items[n]); an item never rated in training gets μ + b_u."""
        raw = (self.mu + self.user_bias[users] + self.item_bias[items]
               + np.einsum("nk,nk->n", self.user_factors[users], self.item_factors[items]))
        return np.clip(raw, *self.bounds)


def rmse(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(truth)) ** 2)))


def _rows(index: np.ndarray, n: int) -> list[np.ndarray]:
    """Positions of each row's ratings, for the per-row solves."""
    order = np.argsort(index, kind="stable")
    bounds = np.searchsorted(index[order], np.arange(n + 1))
    return [order[bounds[r]:bounds[r + 1]] for r in range(n)]


def _solve_side(rows: list[np.ndarray], other_factors: np.ndarray, other_index: np.ndarray, target: np.ndarray,
                reg: float, bias_reg: float, factors: np.ndarray, bias: np.ndarray) -> None:
    """One half-sweep in place: each row's [factors; bias] as a ridge regression on [other factors; 1]."""
    k = other_factors.shape[1]
    for r, pos in enumerate(rows):
        if not len(pos):
            factors[r], bias[r] = 0.0, 0.0  # never rated: the prediction falls back to the other side's bias
            continue
        z = np.hstack([other_factors[other_index[pos]], np.ones((len(pos), 1))])
        penalty = np.diag(np.append(np.full(k, reg * len(pos)), bias_reg))
        solution = np.linalg.solve(z.T @ z + penalty, z.T @ target[pos])
        factors[r], bias[r] = solution[:k], solution[k]


def fit_biased_mf(train: Ratings, n_users: int, n_items: int, config: BiasedMFConfig,
                  on_epoch: Callable[[int, BiasedMF], None] | None = None) -> BiasedMF:
    """Fits on `train`; `on_epoch(sweep, model)` sees the model after every sweep (validation curves).

    Raises:
        ValueError: no ratings.
    """
    if not len(train.values):
        raise ValueError("biased MF needs at least one rating")
    values = train.values.astype(np.float64)
    rng = np.random.default_rng(config.seed)
    k = config.factors
    user_rows, item_rows = _rows(train.users, n_users), _rows(train.items, n_items)
    model = BiasedMF(mu=float(values.mean()), user_bias=np.zeros(n_users), item_bias=np.zeros(n_items),
                     user_factors=np.zeros((n_users, k)), item_factors=rng.normal(0.0, 0.1, (n_items, k)),
                     bounds=(float(values.min()), float(values.max())))
    model.item_factors[np.array([len(p) == 0 for p in item_rows])] = 0.0
    for sweep in range(1, config.epochs + 1):
        _solve_side(user_rows, model.item_factors, train.items, values - model.mu - model.item_bias[train.items],
                    config.reg, config.bias_reg, model.user_factors, model.user_bias)
        _solve_side(item_rows, model.user_factors, train.users, values - model.mu - model.user_bias[train.users],
                    config.reg, config.bias_reg, model.item_factors, model.item_bias)
        if on_epoch is not None:
            on_epoch(sweep, model)
    return model


def param_grid() -> list[BiasedMFConfig]:
    """Factors × regularisation × bias regularisation; sweeps are chosen along each fit's curve.

    Factors 0 is the biases-only model (μ + b_u + b_i), the classical strong rating baseline.
    """
    grid = [BiasedMFConfig(factors=0, reg=0.0, bias_reg=b, epochs=10) for b in (2.0, 5.0, 15.0)]
    grid += [BiasedMFConfig(factors=k, reg=reg, bias_reg=b, epochs=20)
             for k in (8, 32) for reg in (0.05, 0.1, 0.2) for b in (2.0, 5.0, 15.0)]
    return grid


def tune_biased_mf(train: Ratings, validation: Ratings, n_users: int, n_items: int,
                   grid: Iterable[BiasedMFConfig] | None = None) -> tuple[BiasedMFConfig, float, list[dict]]:
    """The config and sweep count with the lowest validation RMSE.

    Returns:
        (best config with `epochs` set to its best sweep, its validation RMSE, one trace row per config).
    """
    best, best_rmse, trace = None, np.inf, []
    for config in grid or param_grid():
        curve: list[float] = []
        fit_biased_mf(train, n_users, n_items, config,
                      lambda _, m: curve.append(rmse(m.predict(validation.users, validation.items), validation.values)))
        sweep = int(np.argmin(curve)) + 1
        trace.append({**config.as_dict(), "best_epochs": sweep, "validation_rmse": round(curve[sweep - 1], 5)})
        if curve[sweep - 1] < best_rmse:
            best, best_rmse = replace(config, epochs=sweep), curve[sweep - 1]
    return best, float(best_rmse), trace
