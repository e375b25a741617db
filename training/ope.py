"""Off-policy evaluation (OPE) of logged recommendation impressions: IPS, SNIPS and DR click-rate estimates
of a target policy, with cluster-bootstrap confidence intervals over requests.

The gateway logs one row per shown item with the logging policy's probability of that item at that slot.
The estimators here are position-wise: each (request, slot) is one contextual-bandit round, and the value is
the target policy's expected clicks per impression (its click rate). That is exact only for *marginal*
propensities (greedy: 1; epsilon: 1-ε for the greedy item, ε/P for a pool item). Softmax (Plackett-Luce)
rows log the probability of an item *given the items above it* (`propensity_kind` "conditional"); a
position-wise ratio with it is biased, so `estimate` and `run_ope` refuse such rows instead of guessing.

Unbiasedness also needs support: wherever the target puts mass (pe > 0) the logging policy must too. A
greedy log cannot tell what an epsilon target's pool items would earn; IPS/SNIPS then miss that mass and
only DR's reward model speaks for it (`run_ope` adds a warning).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from training.impression_log import ImpressionLog, read_log

BOOTSTRAP_RESAMPLES = 1000
CI_LEVEL = 0.95
ESTIMATORS = ("ips", "snips", "dr")
TARGETS = ("greedy", "epsilon")
# Pseudo-impressions at the overall click rate added to every greedy rank: ranks the log rarely shows
# (deep pool items) shrink toward the mean instead of swinging DR with a 0/1 rate from a handful of rows.
REWARD_PRIOR_STRENGTH = 10.0
# Bootstrap index matrices are built this many entries at a time, so memory stays bounded.
_BOOTSTRAP_CHUNK_ENTRIES = 4_000_000



# ---------------------------------------------------------------- estimators (pure, over numpy arrays)

def importance_weights(p0: np.ndarray, pe: np.ndarray) -> np.ndarray:
    """w = pe / p0 per impression.

    Raises:
        ValueError: a logged propensity is outside (0, 1] or a target probability outside [0, 1].
    """
    p0 = np.asarray(p0, dtype=np.float64)
    pe = np.asarray(pe, dtype=np.float64)
    if p0.shape != pe.shape:
        raise ValueError(f"propensities {p0.shape} and target probabilities {pe.shape} differ in shape")
    if not np.all((p0 > 0) & (p0 <= 1)):
        raise ValueError("logged propensities must lie in (0, 1]")
    if not np.all((pe >= 0) & (pe <= 1)):
        raise ValueError("target probabilities must lie in [0, 1]")
    return pe / p0


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's sum(w)^2 / sum(w^2): how many equally weighted impressions the weights are worth."""
    weights = np.asarray(weights, dtype=np.float64)
    sq = float(np.dot(weights, weights))
    return float(weights.sum() ** 2 / sq) if sq > 0 else 0.0


def estimator_terms(name: str, reward: np.ndarray, weights: np.ndarray, q_logged: np.ndarray | None = None,
                    q_target: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-impression (numerator, denominator) whose sums' ratio is the estimator `name`.

    All three are ratios of sums, which lets one cluster bootstrap serve them all:
    IPS = sum(w·r) / n, SNIPS = sum(w·r) / sum(w), DR = sum(q_target + w·(r - q_logged)) / n.

    Raises:
        ValueError: unknown name, or DR without both reward-model arrays.
    """
    reward = np.asarray(reward, dtype=np.float64)
    ones = np.ones_like(reward)
    if name == "ips":
        return weights * reward, ones
    if name == "snips":
        return weights * reward, weights
    if name == "dr":
        if q_logged is None or q_target is None:
            raise ValueError("the DR estimator needs q_logged and q_target")
        q_logged = np.asarray(q_logged, dtype=np.float64)
        q_target = np.asarray(q_target, dtype=np.float64)
        return q_target + weights * (reward - q_logged), ones
    raise ValueError(f"unknown estimator {name!r}; expected one of {ESTIMATORS}")


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> float:
    total = float(np.sum(denominator))
    return float(np.sum(numerator)) / total if total > 0 else float("nan")


def ips_estimate(reward: np.ndarray, p0: np.ndarray, pe: np.ndarray) -> float:
    """Inverse propensity scoring: mean(r · pe/p0)."""
    return _ratio(*estimator_terms("ips", reward, importance_weights(p0, pe)))


def snips_estimate(reward: np.ndarray, p0: np.ndarray, pe: np.ndarray) -> float:
    """Self-normalised IPS: sum(r·w) / sum(w); NaN when every weight is 0 (no logged row the target shows)."""
    return _ratio(*estimator_terms("snips", reward, importance_weights(p0, pe)))


def dr_estimate(reward: np.ndarray, p0: np.ndarray, pe: np.ndarray, q_logged: np.ndarray,
                q_target: np.ndarray) -> float:
    """Doubly robust: mean(q_target + w·(r - q_logged)); unbiased if either the weights or q are right."""
    return _ratio(*estimator_terms("dr", reward, importance_weights(p0, pe), q_logged, q_target))


def cluster_codes(clusters: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense 0..C-1 code per impression for its cluster (request id), and C."""
    uniques, codes = np.unique(np.asarray(clusters), return_inverse=True)
    return codes.reshape(-1), len(uniques)


def cluster_bootstrap_ratios(numerators: np.ndarray, denominators: np.ndarray, clusters: np.ndarray,
                             resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                             level: float = CI_LEVEL) -> np.ndarray:
    """Percentile CIs of several ratio-of-sums statistics, resampling whole clusters with replacement.

    Impressions of one request share a user and a slate, so they are resampled together. Every statistic
    sees the same resampled clusters, which keeps the estimators' intervals comparable.

    Args:
        numerators, denominators: [m, n] per-impression terms of m statistics sum(num)/sum(den).
        clusters: [n] cluster label per impression.
    Returns:
        [m, 2] array of (low, high); NaN where no resample has a positive denominator.
    Raises:
        ValueError: shapes disagree, no impressions, resamples < 1 or level outside (0, 1).
    """
    numerators = np.atleast_2d(np.asarray(numerators, dtype=np.float64))
    denominators = np.atleast_2d(np.asarray(denominators, dtype=np.float64))
    codes, n_clusters = cluster_codes(clusters)
    if numerators.shape != denominators.shape or numerators.shape[1] != len(codes):
        raise ValueError(f"terms {numerators.shape}/{denominators.shape} do not match {len(codes)} clusters")
    if n_clusters == 0:
        raise ValueError("no impressions to resample")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples} and {level}")
    m = numerators.shape[0]
    # Per-cluster sums first: a resample is then a C-sized draw, however many impressions a request has.
    sums = np.empty((n_clusters, 2 * m))
    for j in range(m):
        sums[:, j] = np.bincount(codes, weights=numerators[j], minlength=n_clusters)
        sums[:, m + j] = np.bincount(codes, weights=denominators[j], minlength=n_clusters)
    rng = np.random.default_rng(seed)
    totals = np.empty((resamples, 2 * m))
    chunk = max(1, _BOOTSTRAP_CHUNK_ENTRIES // n_clusters)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, n_clusters, size=(stop - start, n_clusters))
        # How often each cluster was drawn, then one matrix product instead of a gather per statistic.
        counts = np.bincount((idx + n_clusters * np.arange(stop - start)[:, None]).ravel(),
                             minlength=(stop - start) * n_clusters).reshape(stop - start, n_clusters)
        totals[start:stop] = counts @ sums
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(totals[:, m:] > 0, totals[:, :m] / totals[:, m:], np.nan)
    alpha = (1.0 - level) / 2.0
    out = np.full((m, 2), np.nan)
    for j in range(m):
        finite = ratios[:, j][np.isfinite(ratios[:, j])]
        if len(finite):
            out[j] = np.quantile(finite, [alpha, 1.0 - alpha])
    return out


def require_marginal(propensity_kind: np.ndarray | str, n: int) -> None:
    """Refuses conditional (Plackett-Luce) propensities, which position-wise estimators would misuse.

    Raises:
        ValueError: any kind is not "marginal", with how many rows are conditional.
    """
    kinds = np.broadcast_to(np.asarray(propensity_kind, dtype=object), (n,))
    bad = kinds != "marginal"
    if bad.any():
        n_conditional = int(np.sum(kinds == "conditional"))
        raise ValueError(
            f"{int(bad.sum())} of {n} impressions do not carry marginal propensities ({n_conditional} "
            "conditional, e.g. softmax/Plackett-Luce): position-wise IPS/SNIPS/DR would be biased; "
            "drop those rows or use a slate estimator")


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def estimate(reward: np.ndarray, p0: np.ndarray, pe: np.ndarray, clusters: np.ndarray, *,
             propensity_kind: np.ndarray | str, q_logged: np.ndarray | None = None,
             q_target: np.ndarray | None = None, estimators: tuple[str, ...] = ESTIMATORS,
             resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, level: float = CI_LEVEL) -> dict:
    """Point estimates and cluster-bootstrap CIs of the target policy's click rate per impression.

    Args:
        reward: [n] click (0/1) per logged impression.
        p0: [n] logged marginal propensity of the shown item at its slot.
        pe: [n] target policy's probability of that item at that slot.
        clusters: [n] request id per impression (the bootstrap unit).
        propensity_kind: "marginal"/"conditional", per impression or one for all; must be stated, since
            only marginal propensities are valid here.
        q_logged, q_target: reward-model predictions for the logged item and for the target's slot value;
            needed for "dr" only.
    Returns:
        {"n_impressions", "n_requests", "ess", "estimators": {name: {"estimate", "ci95": [lo, hi]}}};
        NaN values (SNIPS with no weight) come back as None so the dict stays valid JSON.
    Raises:
        ValueError: conditional propensities, bad probabilities, mismatched shapes, or DR without q.
    """
    reward = np.asarray(reward, dtype=np.float64)
    if len(reward) == 0:
        raise ValueError("no impressions to evaluate")
    require_marginal(propensity_kind, len(reward))
    weights = importance_weights(p0, pe)
    if weights.shape != reward.shape:
        raise ValueError(f"reward {reward.shape} and propensities {weights.shape} differ in shape")
    terms = [estimator_terms(name, reward, weights, q_logged, q_target) for name in estimators]
    numerators = np.stack([t[0] for t in terms])
    denominators = np.stack([t[1] for t in terms])
    codes, n_requests = cluster_codes(clusters)
    cis = cluster_bootstrap_ratios(numerators, denominators, codes, resamples, seed, level)
    return {
        "n_impressions": len(reward),
        "n_requests": n_requests,
        "ess": effective_sample_size(weights),
        "estimators": {
            name: {"estimate": _json_float(_ratio(numerators[j], denominators[j])),
                   "ci95": [_json_float(cis[j, 0]), _json_float(cis[j, 1])]}
            for j, name in enumerate(estimators)},
    }


def on_policy_value(reward: np.ndarray, clusters: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = 0, level: float = CI_LEVEL) -> dict:
    """Plain click rate of a log with its cluster-bootstrap CI: the on-policy truth an OPE estimate of the
    same policy should agree with.

    Returns:
        {"estimate", "ci95": [lo, hi], "n_impressions", "n_requests"}.
    """
    reward = np.asarray(reward, dtype=np.float64)
    if len(reward) == 0:
        raise ValueError("no impressions to evaluate")
    codes, n_requests = cluster_codes(clusters)
    ones = np.ones_like(reward)
    (lo, hi), = cluster_bootstrap_ratios(reward[None], ones[None], codes, resamples, seed, level)
    return {"estimate": float(reward.mean()), "ci95": [float(lo), float(hi)],
            "n_impressions": len(reward), "n_requests": n_requests}


# ---------------------------------------------------------------- target policies (from the logged row alone)

def greedy_target_probability(greedy_rank: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Greedy puts r[p] at slot p: probability 1 when the logged item's greedy rank is its slot, else 0."""
    return (np.asarray(greedy_rank) == np.asarray(position)).astype(np.float64)


def epsilon_target_probability(greedy_rank: np.ndarray, position: np.ndarray, slate_size: np.ndarray,
                               epsilon: float, pool_size: np.ndarray | int) -> np.ndarray:
    """Marginal probability that ε-greedy (ε, pool r[k : k+P]) shows the logged item at its slot.

    (1-ε)·[rank == slot] + ε/P·[k <= rank < k+P]; with P == 0 the policy is greedy. The pool term is the
    marginal over which slots explore; it assumes P is at least the number of explored slots, as serving does.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
    greedy_rank = np.asarray(greedy_rank)
    slate_size = np.asarray(slate_size)
    pool = np.broadcast_to(np.asarray(pool_size), greedy_rank.shape)
    if np.any(pool < 0):
        raise ValueError("pool sizes must be >= 0")
    is_greedy = greedy_target_probability(greedy_rank, position)
    in_pool = (greedy_rank >= slate_size) & (greedy_rank < slate_size + pool)
    explored = np.where(pool > 0, epsilon * in_pool / np.maximum(pool, 1), 0.0)
    return np.where(pool > 0, (1.0 - epsilon) * is_greedy, is_greedy) + explored


# ---------------------------------------------------------------- reward model for DR

def rank_click_rates(greedy_rank: np.ndarray, reward: np.ndarray, n_ranks: int,
                     prior_strength: float = REWARD_PRIOR_STRENGTH) -> np.ndarray:
    """Click rate per greedy rank 0..n_ranks-1, smoothed toward the log's overall rate.

    q(g) = (clicks_g + s·mean) / (shows_g + s). Fitted in-sample on the same log (not cross-fitted): with
    one parameter per rank and thousands of rows per shown rank the overfit bias is negligible, and DR stays
    unbiased through its correction term whenever the propensities are right. It ignores the slot, so a
    pool item's q is its rate wherever it was explored.
    """
    greedy_rank = np.asarray(greedy_rank, dtype=np.int64)
    reward = np.asarray(reward, dtype=np.float64)
    if len(reward) == 0:
        raise ValueError("no impressions to fit a reward model on")
    n_ranks = max(int(n_ranks), int(greedy_rank.max()) + 1)
    shows = np.bincount(greedy_rank, minlength=n_ranks)[:n_ranks]
    clicks = np.bincount(greedy_rank, weights=reward, minlength=n_ranks)[:n_ranks]
    prior = float(reward.mean())
    return (clicks + prior_strength * prior) / (shows + prior_strength)


def reward_predictions(q_by_rank: np.ndarray, greedy_rank: np.ndarray, position: np.ndarray,
                       slate_size: np.ndarray, epsilon: float, pool_size: np.ndarray | int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(q_logged, q_target) per impression for an ε-greedy target (ε = 0 is greedy).

    q_logged = q(rank of the shown item); q_target = (1-ε)·q(slot) + ε·mean(q over pool ranks k..k+P-1),
    since the greedy item at slot p has rank p. `q_by_rank` must cover every rank used.
    """
    q_by_rank = np.asarray(q_by_rank, dtype=np.float64)
    position = np.asarray(position, dtype=np.int64)
    slate_size = np.asarray(slate_size, dtype=np.int64)
    pool = np.broadcast_to(np.asarray(pool_size, dtype=np.int64), position.shape)
    q_logged = q_by_rank[np.asarray(greedy_rank, dtype=np.int64)]
    q_greedy = q_by_rank[position]
    cumulative = np.concatenate([[0.0], np.cumsum(q_by_rank)])
    pool_mean = (cumulative[slate_size + pool] - cumulative[slate_size]) / np.maximum(pool, 1)
    q_target = np.where(pool > 0, (1.0 - epsilon) * q_greedy + epsilon * pool_mean, q_greedy)
    return q_logged, q_target


# ---------------------------------------------------------------- putting it together

def evaluate_log(log: ImpressionLog, target: str, epsilon: float | None = None, pool_size: int | None = None,
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict:
    """IPS/SNIPS/DR estimates of a greedy or ε-greedy target on a log, next to the log's own click rate.

    Args:
        target: "greedy" or "epsilon".
        epsilon: the target's ε (required for "epsilon").
        pool_size: the target's pool size P'; None keeps each row's logged pool_size.
    Returns:
        JSON-able {"target", "n_impressions", "n_requests", "ess", "estimators", "logged_click_rate",
        "warnings"}.
    Raises:
        ValueError: unknown target, missing/invalid epsilon or pool size, or conditional propensities.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if target == "greedy":
        epsilon, pool = 0.0, np.zeros(len(log), dtype=np.int64)
    else:
        if epsilon is None or not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"an epsilon target needs epsilon in [0, 1], got {epsilon}")
        if pool_size is not None and pool_size < 0:
            raise ValueError(f"pool size must be >= 0, got {pool_size}")
        pool = log.pool_size if pool_size is None else np.full(len(log), pool_size, dtype=np.int64)
    require_marginal(log.propensity_kind, len(log))
    pe = epsilon_target_probability(log.greedy_rank, log.position, log.slate_size, epsilon, pool)
    q_by_rank = rank_click_rates(log.greedy_rank, log.clicked, int(np.max(log.slate_size + pool)))
    q_logged, q_target = reward_predictions(q_by_rank, log.greedy_rank, log.position, log.slate_size,
                                            epsilon, pool)
    result = estimate(log.clicked, log.propensity, pe, log.request_id, propensity_kind=log.propensity_kind,
                      q_logged=q_logged, q_target=q_target, resamples=resamples, seed=seed)
    logged_explores = (log.policy == "epsilon") & (log.policy_param > 0) & (log.pool_size >= pool)
    unsupported = int(np.sum((epsilon > 0) & (pool > 0) & ~logged_explores))
    notes = [] if unsupported == 0 else [
        (f"on {unsupported} impressions the target explores pool items the logging policy never could: "
         "IPS/SNIPS cannot see them (biased), only DR's reward model speaks for them")]
    return {
        "target": {"policy": target, "epsilon": float(epsilon),
                   "pool_size": None if target == "greedy" or pool_size is None else int(pool_size)},
        "n_impressions": result["n_impressions"],
        "n_requests": result["n_requests"],
        "ess": result["ess"],
        "estimators": result["estimators"],
        "logged_click_rate": on_policy_value(log.clicked, log.request_id, resamples, seed),
        "warnings": notes,
    }


def run_ope(log_path: str | Path, target: str, epsilon: float | None = None, pool_size: int | None = None,
            resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict:
    """Reads a JSONL impression log and evaluates `target` on it; see `evaluate_log` for the dict."""
    return evaluate_log(read_log(log_path), target, epsilon, pool_size, resamples, seed)


def add_ope_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the `--ope*` flags (the parser already owns `--seed`, which seeds the bootstrap)."""
    parser.add_argument("--ope", type=Path, default=None, metavar="LOG",
                        help="off-policy evaluation of a JSONL impression log instead of the offline benchmark")
    parser.add_argument("--ope-target", choices=TARGETS, default="greedy", help="policy to evaluate on the log")
    parser.add_argument("--ope-epsilon", type=float, default=None, metavar="E",
                        help="the epsilon target's exploration rate (required with --ope-target epsilon)")
    parser.add_argument("--ope-pool-size", type=int, default=None, metavar="P",
                        help="the epsilon target's pool size (default: each logged row's pool size)")
    parser.add_argument("--ope-resamples", type=int, default=BOOTSTRAP_RESAMPLES, metavar="N",
                        help="cluster-bootstrap resamples for the 95%% intervals")
    return parser


def main_ope(args: argparse.Namespace) -> int:
    """Prints `run_ope`'s dict as JSON; a bad log or flag is reported on stderr with exit status 2."""
    try:
        result = run_ope(args.ope, args.ope_target, args.ope_epsilon, args.ope_pool_size,
                         args.ope_resamples, args.seed)
    except (ValueError, OSError) as exc:
        print(f"lmrec evaluate --ope: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0
