import math

import numpy as np
import pytest

from training.beyond_accuracy import (attribute_intra_list_diversity, attribute_sets, beyond_accuracy_metrics,
                                      exposure_gini, intra_list_diversity, novelty)


def test_ild_of_orthogonal_items_is_one_and_of_identical_items_zero():
    vectors = np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 0.5], [3.0, 0, 0]])  # item 3 points like item 0
    mean, per_user = intra_list_diversity(np.array([[0, 1, 2], [0, 3, 0]]), vectors)
    # User 0: three orthogonal pairs, distance 1 each. User 1: every pair is parallel, distance 0.
    np.testing.assert_allclose(per_user, [1.0, 0.0], atol=1e-12)
    assert mean == pytest.approx(0.5)


def test_ild_averages_over_unordered_pairs_and_reaches_two_for_opposite_items():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # Pairs (0,1): 1 - 0 = 1; (0,2): 1 - (-1) = 2; (1,2): 1 - 0 = 1; mean 4/3.
    _, per_user = intra_list_diversity(np.array([[0, 1, 2]]), vectors)
    assert per_user[0] == pytest.approx(4 / 3)
    _, opposite = intra_list_diversity(np.array([[0, 2]]), vectors)
    assert opposite[0] == pytest.approx(2.0)


def test_ild_rejects_single_item_lists_and_zero_vectors():
    with pytest.raises(ValueError, match="at least 2"):
        intra_list_diversity(np.array([[0], [1]]), np.eye(2))
    with pytest.raises(ValueError, match="zero vector"):
        intra_list_diversity(np.array([[0, 1]]), np.array([[1.0, 0.0], [0.0, 0.0]]))


def test_attribute_sets_flatten_key_value_pairs():
    assert attribute_sets([{"genre": ["Comedy", "Drama"], "year": ["1995"]}, {}]) == [
        frozenset({"genre=Comedy", "genre=Drama", "year=1995"}), frozenset()]


def test_attribute_ild_is_the_mean_jaccard_distance():
    attributes = [
        {"genre": ["Comedy", "Drama"]},        # 0
        {"genre": ["Drama"], "year": ["1995"]},  # 1
        {"genre": ["Comedy", "Drama"]},        # 2: same set as item 0
        {},                                    # 3
        {},                                    # 4
        {"year": ["Drama"]},                   # 5: the value alone does not match genre=Drama
    ]
    tops = np.array([[0, 1, 2], [3, 4, 0], [1, 5, 3]])
    mean, per_user = attribute_intra_list_diversity(tops, attributes)
    # User 0: (0,1) share {Drama} of {Comedy, Drama, 1995}: 1 - 1/3 = 2/3; (0,2) identical: 0;
    #         (2,1) as (0,1): 2/3. Mean (2/3 + 0 + 2/3) / 3 = 4/9.
    # User 1: (3,4) both empty: 0; (3,0) and (4,0) share nothing: 1 each. Mean 2/3.
    # User 2: (1,5) share nothing ({genre=Drama, year=1995} vs {year=Drama}): 1; (1,3), (5,3): 1. Mean 1.
    np.testing.assert_allclose(per_user, [4 / 9, 2 / 3, 1.0])
    assert mean == pytest.approx((4 / 9 + 2 / 3 + 1) / 3)


def test_novelty_on_a_two_user_toy():
    # Two users; item 0 is in both histories, item 1 in one, item 2 in none (clipped to a count of 1).
    counts = np.array([2, 1, 0])
    mean, per_user = novelty(np.array([[0, 1], [1, 2]]), counts, n_users=2)
    # -log2(2/2) = 0, -log2(1/2) = 1, item 2: -log2(1/2) = 1 (clipped).
    # User 0: (0 + 1) / 2 = 0.5; user 1: (1 + 1) / 2 = 1; mean 0.75.
    np.testing.assert_allclose(per_user, [0.5, 1.0])
    assert mean == pytest.approx(0.75)


def test_novelty_rejects_counts_above_the_user_count():
    with pytest.raises(ValueError, match="n_users"):
        novelty(np.array([[0, 1]]), np.array([3, 1]), n_users=2)


def test_gini_of_uniform_exposure_is_zero_and_of_one_item_is_n_minus_one_over_n():
    assert exposure_gini(np.array([[0, 1], [2, 3]]), n_items=4) == pytest.approx(0.0)
    # Every slot on item 2 of n = 5: (5 - 1) / 5.
    assert exposure_gini(np.array([[2], [2], [2]]), n_items=5) == pytest.approx(4 / 5)


def test_gini_counts_never_recommended_items_and_matches_the_mean_difference_form():
    tops = np.array([[0, 1], [0, 2], [0, 1]])
    # Exposure over 5 items: [3, 2, 1, 0, 0]. Gini = sum_ij |x_i - x_j| / (2 n^2 mean).
    x = np.array([3, 2, 1, 0, 0], dtype=float)
    expected = np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean())
    assert exposure_gini(tops, n_items=5) == pytest.approx(expected)
    assert exposure_gini(tops, n_items=3) < exposure_gini(tops, n_items=5)  # zeros make it less equal


def test_beyond_accuracy_metrics_keys_and_ranges():
    rng = np.random.default_rng(0)
    n_items, n_users = 30, 12
    tops = np.stack([rng.choice(n_items, 10, replace=False) for _ in range(n_users)])
    attributes = [{"genre": [str(i % 4)]} if i % 5 else {} for i in range(n_items)]
    counts = rng.integers(0, n_users + 1, n_items)
    values, per_user = beyond_accuracy_metrics(tops, rng.normal(size=(n_items, 8)), attributes, counts, n_users)
    assert set(values) == {"ild@10", "ild_attr@10", "novelty@10", "coverage@10", "gini@10"}
    assert set(per_user) == {"ild@10", "ild_attr@10", "novelty@10"}
    assert 0.0 <= values["ild@10"] <= 2.0 and 0.0 <= values["ild_attr@10"] <= 1.0
    assert 0.0 <= values["novelty@10"] <= math.log2(n_users)
    assert 0.0 <= values["gini@10"] < 1.0
    assert values["coverage@10"] == len(np.unique(tops)) / n_items
    assert all(len(v) == n_users for v in per_user.values())
    with pytest.raises(ValueError, match="item vectors"):
        beyond_accuracy_metrics(tops, np.ones((n_items, 2)), attributes[:-1], counts, n_users)
