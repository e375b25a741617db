"""Ranking metrics over the full catalogue, their confidence intervals and paired significance.

One held-out item per user, so every metric is a per-user array and the reported value is its mean.
Ties are pessimistic: an item scoring exactly the target's score counts as ranked above it, so a model
that gives many items the same score (MostPop, cold items scored 0) is not flattered by tie order.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# Test items grouped by training popularity, most to least popular: the slices every report shows.
POPULARITY_BUCKETS = ("head", "torso", "tail")

CUTOFFS = (10, 20)
METRICS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr@10")
BOOTSTRAP_SAMPLES = 1000
PERMUTATION_SAMPLES = 10000


def mask_history(scores: np.ndarray, history: sp.csr_matrix, user_idx: np.ndarray) -> np.ndarray:
    """Sets each user's own history items to -inf in place and returns `scores`."""
    rows = history[user_idx]
    row_of_entry = np.repeat(np.arange(len(user_idx)), np.diff(rows.indptr))
    scores[row_of_entry, rows.indices] = -np.inf
    return scores


def phase_ndcg10(scores: np.ndarray, data, phase: str, user_idx: np.ndarray) -> np.ndarray:
    """Per-user NDCG@10 of `scores` [users, items] for `data`'s (a SplitData) `phase` targets, each user's
    history masked in place: what early stopping and the parity checks compare."""
    mask_history(scores, data.history_matrix(phase), user_idx)
    return per_user_metrics(target_ranks(scores, data.targets(phase)[user_idx]))["ndcg@10"]


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each row's target among all columns (pessimistic ties).

    Raises:
        ValueError: scores contain NaN, or shapes disagree.
    """
    if scores.ndim != 2 or scores.shape[0] != len(targets):
        raise ValueError(f"scores {scores.shape} do not match {len(targets)} targets")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    target_scores = scores[np.arange(len(targets)), targets][:, None]
    # >= counts the target itself once, which turns "items at or above" into a 1-based rank.
    return (scores >= target_scores).sum(axis=1).astype(np.int64)


def per_user_metrics(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """HR@k, NDCG@k (one relevant item: 1/log2(rank+1)) and MRR@10 per user."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {}
    for k in CUTOFFS:
        hit = ranks <= k
        out[f"hr@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0)
    out["mrr@10"] = np.where(ranks <= 10, 1.0 / ranks, 0.0)
    return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best columns per row, best first (ties by lower index)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
    return np.take_along_axis(part, order, axis=1)


def coverage(top_lists: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one user's list."""
    return float(len(np.unique(top_lists)) / n_items) if n_items else 0.0


def bootstrap_ci(values: np.ndarray, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean, resampling users with replacement."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    # Chunked so memory stays bounded for large user counts.
    chunk = max(1, 2_000_000 // len(values))
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        idx = rng.integers(0, len(values), size=(stop - start, len(values)))
        means[start:stop] = values[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return (float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha)))


def paired_permutation_test(a: np.ndarray, b: np.ndarray, seed: int = 0,
                            samples: int = PERMUTATION_SAMPLES) -> dict:
    """Two-sided paired randomization (sign-flip) test of mean(a - b) = 0 over the same users.

    Returns:
        {"mean_diff", "p_value", "samples"}; p uses the (count + 1) / (samples + 1) estimator so it is
        never exactly 0.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    diff = a - b
    observed = abs(diff.mean()) if len(diff) else 0.0
    rng = np.random.default_rng(seed)
    extreme = 0
    chunk = max(1, 2_000_000 // max(1, len(diff)))
    for start in range(0, samples, chunk):
        n = min(chunk, samples - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(n, len(diff)))
        # Tolerance keeps float noise from deciding ties with the observed statistic.
        extreme += int((np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12).sum())
    return {"mean_diff": float(diff.mean()) if len(diff) else 0.0,
            "p_value": (extreme + 1) / (samples + 1), "samples": samples}
