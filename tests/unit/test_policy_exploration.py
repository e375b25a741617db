"""Exploration: the shown list, and the propensities that off-policy evaluation relies on."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.policy.exploration import place, rng_for


def test_greedy_shows_the_top_k_with_propensity_one():
    got = place([5, 4, 3, 2, 1], 3, "greedy", 0.0, 10, rng_for("r"))
    assert got.indices == [0, 1, 2] and got.propensities == [1.0] * 3 and not any(got.explored)


def test_epsilon_logs_marginal_propensities_that_match_the_draw_frequencies():
    scores = list(np.linspace(1, 0, 30))
    k, pool, eps = 5, 10, 0.3
    counts = np.zeros((k, 30))
    logged = {}
    rng = np.random.default_rng(0)
    for _ in range(20_000):
        got = place(scores, k, "epsilon", eps, pool, rng)
        assert len(set(got.indices)) == k  # no item twice
        for p, (i, prop) in enumerate(zip(got.indices, got.propensities)):
            counts[p, i] += 1
            logged[(p, i)] = prop
    freq = counts / 20_000
    for (p, i), prop in logged.items():
        assert prop == pytest.approx(1 - eps if i == p else eps / pool)
        assert freq[p, i] == pytest.approx(prop, abs=0.01)
    assert freq[:, k + pool:].sum() == 0  # nothing from beyond the pool


def test_softmax_logs_the_conditional_plackett_luce_probability():
    scores = [2.0, 1.0, 0.0]
    got = place(scores, 2, "softmax", 1.0, 5, rng_for("seed"))
    w = np.exp((np.array(scores) - 2.0) / np.std(scores))  # temperature in units of the scores' sd
    first = got.indices[0]
    assert got.propensities[0] == pytest.approx(w[first] / w.sum())
    rest = w.sum() - w[first]
    assert got.propensities[1] == pytest.approx(w[got.indices[1]] / rest)


def test_the_same_request_id_draws_the_same_list_and_no_pool_means_greedy():
    scores = list(np.linspace(1, 0, 50))
    a = place(scores, 10, "epsilon", 0.5, 20, rng_for("req-42"))
    b = place(scores, 10, "epsilon", 0.5, 20, rng_for("req-42"))
    assert a == b
    assert place(scores[:10], 10, "epsilon", 0.5, 20, rng_for("x")).propensities == [1.0] * 10
