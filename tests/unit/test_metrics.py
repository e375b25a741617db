import math

import numpy as np
import pytest
import scipy.sparse as sp

from training import metrics


def test_hand_computed_metrics():
    values = metrics.per_user_metrics(np.array([1, 3, 10, 11, 20, 25]))
    assert values["hr@10"].tolist() == [1, 1, 1, 0, 0, 0]
    assert values["hr@20"].tolist() == [1, 1, 1, 1, 1, 0]
    assert values["ndcg@10"] == pytest.approx([1.0, 0.5, 1 / math.log2(11), 0, 0, 0])
    assert values["ndcg@20"][4] == pytest.approx(1 / math.log2(21))
    assert values["mrr@10"] == pytest.approx([1.0, 1 / 3, 0.1, 0, 0, 0])


def test_ranks_count_ties_against_the_target():
    scores = np.array([[0.1, 0.5, 0.5, 0.9], [1.0, 1.0, 1.0, 1.0], [3.0, 2.0, 1.0, 0.0]])
    assert metrics.target_ranks(scores, np.array([1, 0, 2])).tolist() == [3, 4, 3]


def test_masked_history_drops_out_of_the_ranking():
    scores = np.array([[5.0, 4.0, 3.0, 2.0], [5.0, 4.0, 3.0, 2.0]])
    history = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float32))
    metrics.mask_history(scores, history, np.array([0, 1]))
    assert np.isneginf(scores[0, :2]).all() and np.isneginf(scores[1, 3])
    assert metrics.target_ranks(scores, np.array([2, 2])).tolist() == [1, 3]


def test_nan_scores_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        metrics.target_ranks(np.array([[np.nan, 1.0]]), np.array([1]))


def test_top_k_and_coverage():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [0.8, 0.1, 0.1, 0.2]])
    tops = metrics.top_k(scores, 2)
    assert tops.tolist() == [[1, 3], [0, 3]]
    assert metrics.coverage(tops, 4) == 0.75


def test_against_ranx_on_random_data():
    ranx = pytest.importorskip("ranx")
    rng = np.random.default_rng(0)
    n_users, n_items = 200, 60
    scores = rng.normal(size=(n_users, n_items))
    targets = rng.integers(0, n_items, size=n_users)
    ours = metrics.per_user_metrics(metrics.target_ranks(scores, targets))
    qrels = ranx.Qrels({f"u{u}": {f"i{targets[u]}": 1} for u in range(n_users)})
    run = ranx.Run({f"u{u}": {f"i{i}": float(scores[u, i]) for i in range(n_items)} for u in range(n_users)})
    theirs = ranx.evaluate(qrels, run, ["hit_rate@10", "ndcg@10", "hit_rate@20", "ndcg@20", "mrr@10"])
    assert ours["hr@10"].mean() == pytest.approx(theirs["hit_rate@10"])
    assert ours["hr@20"].mean() == pytest.approx(theirs["hit_rate@20"])
    assert ours["ndcg@10"].mean() == pytest.approx(theirs["ndcg@10"])
    assert ours["ndcg@20"].mean() == pytest.approx(theirs["ndcg@20"])
    assert ours["mrr@10"].mean() == pytest.approx(theirs["mrr@10"])


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    values = np.random.default_rng(1).binomial(1, 0.3, size=500).astype(float)
    lo, hi = metrics.bootstrap_ci(values, seed=7)
    assert lo < values.mean() < hi
    assert 0.05 < hi - lo < 0.12  # about 4 standard errors of a 0.3 proportion over 500 users
    assert metrics.bootstrap_ci(values, seed=7) == (lo, hi)
    assert metrics.bootstrap_ci(np.full(10, 0.25)) == (0.25, 0.25)


def test_paired_permutation_test():
    rng = np.random.default_rng(2)
    a = rng.normal(size=300)
    same = metrics.paired_permutation_test(a, a, samples=2000)
    assert same["p_value"] == 1.0 and same["mean_diff"] == 0.0
    shifted = metrics.paired_permutation_test(a + 0.5, a + rng.normal(scale=0.1, size=300), samples=2000)
    assert shifted["p_value"] < 0.001 and shifted["mean_diff"] == pytest.approx(0.5, abs=0.05)
    noise = metrics.paired_permutation_test(a, a + rng.normal(scale=1.0, size=300) * 1e-3, samples=2000)
    assert noise["p_value"] > 0.01
    with pytest.raises(ValueError):
        metrics.paired_permutation_test(a, a[:10])
