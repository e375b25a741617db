"""MMR diversity: λ = 0 is the score order; higher λ trades score for dissimilarity."""

from __future__ import annotations

import numpy as np

from gateway.policy.diversity import mmr_order


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_zero_diversity_returns_the_score_order_exactly_ties_by_position():
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1])
    assert mmr_order(scores, _unit(np.eye(5)), 5, 0.0) == [1, 3, 2, 0, 4]


def test_diversity_moves_a_dissimilar_item_above_near_duplicates():
    # Items 0-2 are near-duplicates; item 3 is different and scored lowest.
    vectors = _unit([[1, 0.01, 0], [1, 0, 0.01], [1, 0.02, 0.01], [0, 1, 0]])
    scores = np.array([1.0, 0.95, 0.9, 0.5])
    assert mmr_order(scores, vectors, 4, 0.0) == [0, 1, 2, 3]
    # Hand-computed at λ = 0.5, relevance = (s - 0.5) / 0.5 = [1, 0.9, 0.8, 0]: after item 0, the gains are
    # 0.5·0.9 - 0.5·~1 ≈ -0.05 (item 1), 0.5·0.8 - 0.5·~1 ≈ -0.1 (item 2), 0.5·0 - 0.5·0 = 0 (item 3).
    assert mmr_order(scores, vectors, 4, 0.5)[:2] == [0, 3]
    assert mmr_order(scores, vectors, 2, 1.0) == [0, 3]
