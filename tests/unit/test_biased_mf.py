"""Biased MF: recovers planted biases and factors, stays finite on unseen items, tunes on validation."""

from __future__ import annotations

import numpy as np
import pytest

from training.baselines.biased_mf import BiasedMFConfig, Ratings, fit_biased_mf, rmse, tune_biased_mf

N_USERS, N_ITEMS = 120, 80


def _planted(rank: int = 0, noise: float = 0.3, density: float = 0.3, seed: int = 0):
    """Ratings μ + b_u + b_i (+ p·q) + noise on a random share of pairs; the rest is the held-out truth."""
    rng = np.random.default_rng(seed)
    b_u, b_i = rng.normal(0, 0.6, N_USERS), rng.normal(0, 0.6, N_ITEMS)
    p, q = rng.normal(0, 0.8, (N_USERS, rank)), rng.normal(0, 0.8, (N_ITEMS, rank))
    users, items = np.meshgrid(np.arange(N_USERS), np.arange(N_ITEMS), indexing="ij")
    users, items = users.ravel(), items.ravel()
    clean = 3.5 + b_u[users] + b_i[items] + np.einsum("nk,nk->n", p[users], q[items])
    values = clean + rng.normal(0, noise, len(clean))
    train = rng.random(len(values)) < density
    return (Ratings(users[train], items[train], values[train]), Ratings(users[~train], items[~train], clean[~train]),
            b_u, b_i)


def test_recovers_planted_biases_better_than_the_global_mean():
    train, held_out, b_u, b_i = _planted()
    model = fit_biased_mf(train, N_USERS, N_ITEMS, BiasedMFConfig(factors=0, bias_reg=1.0, epochs=10))
    assert np.corrcoef(model.user_bias, b_u)[0, 1] > 0.95
    assert np.corrcoef(model.item_bias, b_i)[0, 1] > 0.95
    mean_rmse = rmse(np.full(len(held_out.values), train.values.mean()), held_out.values)
    assert rmse(model.predict(held_out.users, held_out.items), held_out.values) < 0.5 * mean_rmse


def test_factors_capture_a_planted_interaction_the_biases_cannot():
    train, held_out, _, _ = _planted(rank=2, density=0.5)
    biases = fit_biased_mf(train, N_USERS, N_ITEMS, BiasedMFConfig(factors=0, bias_reg=1.0, epochs=10))
    factors = fit_biased_mf(train, N_USERS, N_ITEMS, BiasedMFConfig(factors=2, reg=0.01, bias_reg=1.0, epochs=15))
    truth = held_out.values
    assert rmse(factors.predict(held_out.users, held_out.items), truth) < 0.6 * rmse(
        biases.predict(held_out.users, held_out.items), truth)


def test_an_item_never_rated_falls_back_to_the_user_bias_and_predictions_stay_in_range():
    train, _, _, _ = _planted(rank=2)
    keep = train.items != 0
    train = Ratings(train.users[keep], train.items[keep], train.values[keep])
    model = fit_biased_mf(train, N_USERS, N_ITEMS, BiasedMFConfig(factors=4, epochs=5))
    users = np.arange(N_USERS)
    np.testing.assert_allclose(model.predict(users, np.zeros(N_USERS, dtype=int)),
                               np.clip(model.mu + model.user_bias, *model.bounds))
    assert model.item_bias[0] == 0.0 and not model.item_factors[0].any()
    everything = model.predict(np.repeat(users, N_ITEMS), np.tile(np.arange(N_ITEMS), N_USERS))
    assert everything.min() >= model.bounds[0] and everything.max() <= model.bounds[1]


def test_tuning_picks_the_lowest_validation_rmse_and_its_sweep_count():
    train, held_out, _, _ = _planted(rank=2, density=0.5)
    grid = [BiasedMFConfig(factors=0, bias_reg=1.0, epochs=4), BiasedMFConfig(factors=2, reg=0.01, epochs=6)]
    best, best_rmse, trace = tune_biased_mf(train, held_out, N_USERS, N_ITEMS, grid)
    assert best.factors == 2 and 1 <= best.epochs <= 6
    assert best_rmse == pytest.approx(min(row["validation_rmse"] for row in trace), abs=1e-5)
    refit = fit_biased_mf(train, N_USERS, N_ITEMS, best)  # seeded: the refit reproduces the tuned figure
    assert rmse(refit.predict(held_out.users, held_out.items), held_out.values) == pytest.approx(best_rmse)


def test_no_ratings_or_misaligned_arrays_are_refused():
    with pytest.raises(ValueError, match="at least one rating"):
        fit_biased_mf(Ratings(np.zeros(0, int), np.zeros(0, int), np.zeros(0)), 2, 2, BiasedMFConfig())
    with pytest.raises(ValueError, match="same length"):
        Ratings(np.zeros(2, int), np.zeros(1, int), np.zeros(2))
