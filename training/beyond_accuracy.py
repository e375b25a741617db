"""Beyond-accuracy metrics over top-k lists: intra-list diversity, novelty, coverage, exposure Gini.

Every function takes `tops`, an int array [n_users, k] of dense item indices (best first), as
`training.evaluate.score_phase(..., want_top=k)` returns, and is pure: no model, no I/O.

Definitions follow Microsoft Recommenders, `recommenders.evaluation.python_evaluation`
(https://github.com/recommenders-team/recommenders), where it has them:
  * `diversity` (Zhang et al., "Auralist", WSDM 2012, eq. 3; Ziegler et al. 2005's intra-list
    similarity): per user, 1 - the mean similarity over the unordered pairs of distinct items in the
    list, then the mean over users. Recommenders' `item_feature_vector` similarity is the cosine of item
    vectors; `intra_list_diversity` is that. `attribute_intra_list_diversity` swaps in the Jaccard
    distance between attribute sets, which Recommenders does not offer.
  * `novelty` (Castells, Vargas and Wang, ECIR 2011): the mean self-information -log2 p(i) of the
    recommended items. Recommenders uses the choice model, p(i) = interactions with i / all
    interactions; here p(i) = users who interacted with i / users (the discovery model of the same
    paper: the probability that a random user knows i). With one interaction per (user, item), as in
    training/split.py, the two differ by the constant log2(interactions / users) for every item.
  * `catalog_coverage` (Shani and Gunawardana, "Evaluating Recommendation Systems", 2011): distinct
    recommended items over the catalogue. `training.metrics.coverage` computes it over the whole
    catalogue (cold items included), where Recommenders divides by the items seen in training.
  * `distributional_coverage` in Recommenders is the entropy of exposure (Shani and Gunawardana eq. 21);
    the Gini index of the same exposure (their eq. 20) is reported instead, since its 0-1 range reads
    at a glance. `exposure_gini` uses the Lorenz-curve Gini, sum_j (2j - n - 1) x_j / (n sum x): all
    exposure on one of n items gives (n - 1) / n. Shani and Gunawardana (and RankSys, Elliot) divide by
    n - 1 instead of n, reaching exactly 1; theirs is this value times n / (n - 1).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from training import metrics

# Users per chunk when gathering item vectors: bounds memory at chunk x k x dim floats.
USER_CHUNK = 1024


def _list_pairs(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (i, j), i < j, of the unordered pairs in a list of k; ValueError when there are none."""
    if k < 2:
        raise ValueError(f"intra-list diversity needs lists of at least 2 items, got k={k}")
    return np.triu_indices(k, 1)


def intra_list_diversity(tops: np.ndarray, vectors: np.ndarray) -> tuple[float, np.ndarray]:
    """ILD@k by item vectors: per list, the mean of (1 - cosine similarity) over its unordered item pairs.

    Args:
        tops: int [n_users, k] dense item indices.
        vectors: float [n_items, dim] item vectors (need not be unit length; they are normalised here).

    Returns:
        (mean over users, per-user float64 [n_users]); each value lies in [0, 2].

    Raises:
        ValueError: k < 2, or an item in `tops` has a zero vector (no direction, no cosine).
    """
    tops = np.asarray(tops, dtype=np.int64)
    first, second = _list_pairs(tops.shape[1])
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1)
    if (norms[np.unique(tops)] == 0).any():
        raise ValueError("a recommended item has a zero vector: its cosine similarity is undefined")
    unit = vectors / np.where(norms > 0, norms, 1.0)[:, None]
    per_user = np.empty(len(tops), dtype=np.float64)
    for start in range(0, len(tops), USER_CHUNK):
        listed = unit[tops[start:start + USER_CHUNK]]  # [users, k, dim]
        similarity = np.einsum("ukd,ujd->ukj", listed, listed)[:, first, second]
        per_user[start:start + USER_CHUNK] = (1.0 - similarity).mean(axis=1)
    return _mean(per_user), per_user


def attribute_sets(item_attributes: list[dict[str, list[str]]]) -> list[frozenset[str]]:
    """Per item, its attributes flattened into one set of "key=value" strings ({} -> empty set)."""
    return [frozenset(f"{key}={value}" for key, values in attrs.items() for value in values)
            for attrs in item_attributes]


def attribute_intra_list_diversity(tops: np.ndarray,
                                   item_attributes: list[dict[str, list[str]]]) -> tuple[float, np.ndarray]:
    """ILD@k by attributes: per list, the mean Jaccard distance between its items' attribute sets.

    Each item's attributes (e.g. {"genre": ["Comedy", "Drama"], "year": ["1995"]}) become one set of
    "key=value" strings; the distance is 1 - |A ∩ B| / |A ∪ B|, and 0 when both sets are empty.

    Args:
        tops: int [n_users, k] dense item indices.
        item_attributes: per dense item, its multi-valued attributes.

    Returns:
        (mean over users, per-user float64 [n_users]); each value lies in [0, 1].

    Raises:
        ValueError: k < 2.
    """
    tops = np.asarray(tops, dtype=np.int64)
    first, second = _list_pairs(tops.shape[1])
    sets = attribute_sets(item_attributes)
    vocabulary = {value: n for n, value in enumerate(sorted(set().union(*sets)))}
    indptr = np.cumsum([0, *(len(s) for s in sets)])
    indices = np.fromiter((vocabulary[v] for s in sets for v in s), dtype=np.int64, count=int(indptr[-1]))
    # One binary row per item, so a pair's intersection is the row-wise product of two gathered rows.
    membership = sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(len(sets), len(vocabulary)))
    sizes = np.diff(indptr).astype(np.float64)
    left, right = tops[:, first].ravel(), tops[:, second].ravel()
    shared = np.asarray(membership[left].multiply(membership[right]).sum(axis=1)).ravel()
    union = sizes[left] + sizes[right] - shared
    distance = np.where(union > 0, 1.0 - shared / np.where(union > 0, union, 1.0), 0.0)
    per_user = distance.reshape(len(tops), len(first)).mean(axis=1)
    return _mean(per_user), per_user


def novelty(tops: np.ndarray, item_user_counts: np.ndarray, n_users: int) -> tuple[float, np.ndarray]:
    """Novelty@k: the mean self-information -log2 p(i) of each list's items, then the mean over users.

    p(i) = item_user_counts[i] / n_users, the share of users whose training history holds i. Items no
    user has seen (cold items, a count of 0) are clipped to a count of 1, so they get the largest finite
    value, log2(n_users), instead of infinity.

    Args:
        tops: int [n_users_scored, k] dense item indices.
        item_user_counts: per dense item, how many distinct users interacted with it in the history.
        n_users: how many users that history covers (the denominator of p).

    Returns:
        (mean over users, per-user float64 [n_users_scored]); each value lies in [0, log2(n_users)].

    Raises:
        ValueError: n_users < 1 or a count exceeds n_users.
    """
    counts = np.asarray(item_user_counts, dtype=np.float64)
    if n_users < 1 or (counts > n_users).any():
        raise ValueError(f"item counts must lie in [0, n_users] with n_users >= 1 (n_users={n_users})")
    self_information = -np.log2(np.maximum(counts, 1.0) / n_users)
    per_user = self_information[np.asarray(tops, dtype=np.int64)].mean(axis=1)
    return _mean(per_user), per_user


def exposure_gini(tops: np.ndarray, n_items: int) -> float:
    """Gini@k of exposure: how unequally the lists spread their slots over the whole catalogue.

    x_i = how often catalogue item i appears across all lists (never-recommended items count, as 0).
    With x sorted ascending, G = sum_j (2j - n - 1) x_j / (n sum x), j = 1..n: 0 when every item
    appears equally often, (n - 1) / n when one item takes every slot (see the module docstring for
    the n - 1 normalisation some libraries use).
    """
    counts = np.bincount(np.asarray(tops, dtype=np.int64).ravel(), minlength=n_items)
    exposure = np.sort(counts).astype(np.float64)
    total = exposure.sum()
    if n_items == 0 or total == 0:
        return 0.0
    rank = np.arange(1, n_items + 1, dtype=np.float64)
    return float(((2 * rank - n_items - 1) * exposure).sum() / (n_items * total))


def beyond_accuracy_metrics(tops: np.ndarray, vectors: np.ndarray, item_attributes: list[dict[str, list[str]]],
                            item_user_counts: np.ndarray,
                            n_users: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Every metric above at k = tops.shape[1], keyed as results.json stores them ("ild@10", ...).

    Args:
        tops: int [n_users_scored, k] dense item indices.
        vectors: float [n_items, dim] item vectors for ILD; n_items is taken from its length.
        item_attributes: per dense item, its attributes for the attribute ILD.
        item_user_counts, n_users: the history's per-item user counts and user count, for novelty.

    Returns:
        (list-level values: ild, ild_attr, novelty, coverage, gini; per-user arrays: ild, ild_attr,
        novelty, for confidence intervals and paired tests).

    Raises:
        ValueError: the per-item inputs disagree in length, or any metric's own ValueError.
    """
    k = np.asarray(tops).shape[1]
    n_items = len(vectors)
    if len(item_attributes) != n_items or len(item_user_counts) != n_items:
        raise ValueError(f"{n_items} item vectors but {len(item_attributes)} attribute dicts and "
                         f"{len(item_user_counts)} item counts")
    ild, ild_per_user = intra_list_diversity(tops, vectors)
    ild_attr, ild_attr_per_user = attribute_intra_list_diversity(tops, item_attributes)
    nov, nov_per_user = novelty(tops, item_user_counts, n_users)
    values = {f"ild@{k}": ild, f"ild_attr@{k}": ild_attr, f"novelty@{k}": nov,
              f"coverage@{k}": metrics.coverage(tops, n_items), f"gini@{k}": exposure_gini(tops, n_items)}
    per_user = {f"ild@{k}": ild_per_user, f"ild_attr@{k}": ild_attr_per_user, f"novelty@{k}": nov_per_user}
    return values, per_user


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")
