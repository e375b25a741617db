"""The oracle bound of bench/cold_slots.py: a better order among unseen items, nothing else changed."""

import importlib.util
from pathlib import Path

import numpy as np

_SPEC = importlib.util.spec_from_file_location("cold_slots", Path(__file__).parents[2] / "bench" / "cold_slots.py")
cold_slots = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(cold_slots)

TEXT_ONLY = np.array([False, True, False, True, True])
POPULARITY = np.array([50, 1, 40, 100, 10])


def scores():
    return np.array([[0.9, 0.3, 0.5, 0.1, 0.2],
                     [0.4, 0.8, -np.inf, 0.6, -np.inf]], dtype=np.float32)


def test_text_only_scores_keep_their_values_and_trained_items_are_untouched():
    out = cold_slots.popularity_reordered(scores(), TEXT_ONLY, POPULARITY, weight=0.5)
    np.testing.assert_array_equal(out[:, ~TEXT_ONLY], scores()[:, ~TEXT_ONLY])
    for row_in, row_out in zip(scores(), out):
        np.testing.assert_array_equal(np.sort(row_out[TEXT_ONLY]), np.sort(row_in[TEXT_ONLY]))


def test_a_heavy_popularity_weight_orders_unseen_items_by_popularity_and_masked_ones_stay_masked():
    out = cold_slots.popularity_reordered(scores(), TEXT_ONLY, POPULARITY, weight=100.0)
    cold = np.where(TEXT_ONLY)[0]
    assert list(cold[np.argsort(-out[0, TEXT_ONLY])]) == [3, 4, 1]  # popularity 100 > 10 > 1
    # Row 2 had item 4 masked (a history item): it stays -inf, the two finite values go by popularity.
    assert np.isneginf(out[1, 4]) and out[1, 3] == np.float32(0.8) and out[1, 1] == np.float32(0.6)


def test_weight_zero_is_the_model_order():
    np.testing.assert_array_equal(cold_slots.popularity_reordered(scores(), TEXT_ONLY, POPULARITY, 0.0), scores())
