"""Exploration: how the shown list is drawn from the greedy list, and the propensity of each placement.

  * greedy: slot p shows the p-th item; propensity 1.
  * epsilon: each slot independently, with probability ε, shows a uniform draw (without replacement)
    from the pool, the `pool_size` items ranked just below the k shown; a pool item's marginal
    probability at an explored slot is 1/P, so the logged propensity is 1 - ε for the greedy item at its
    slot and ε/P for a pool item. Position-wise estimators (IPS, SNIPS, DR) are exact with these.
  * softmax: slots filled in order by Plackett-Luce sampling without replacement over the k + pool best
    items, with probability ∝ exp(score / (temperature · sd)), sd being the standard deviation of those
    items' scores, so a temperature means the same whatever the model's score scale; the logged
    propensity is that probability given the items above (conditional: the list's probability is their
    product).
The draw is seeded from the request id, so a repeated request reproduces its list.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

POLICIES = ("greedy", "epsilon", "softmax")


@dataclass(frozen=True)
class Placement:
    """Indices into the greedy list of the k shown items, the propensity of each, whether exploration
    (not the greedy choice) put it there, and the pool size used."""

    indices: list[int]
    propensities: list[float]
    explored: list[bool]
    pool_size: int


def rng_for(request_id: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "little"))


def place(scores: list[float], k: int, policy: str, parameter: float, pool_size: int,
          rng: np.random.Generator) -> Placement:
    """Draws the shown list from a greedy list (scores best first, as served).

    Args:
        scores: the greedy list's scores, in its order.
        k: places to fill.
        policy: one of POLICIES.
        parameter: ε for epsilon, the temperature for softmax; ignored for greedy.
        pool_size: most items below the k that exploration may show.
    """
    n = len(scores)
    k = min(k, n)
    pool = min(pool_size, n - k)
    if policy == "greedy" or pool <= 0 or (policy == "epsilon" and parameter <= 0):
        return Placement(list(range(k)), [1.0] * k, [False] * k, 0)
    if policy == "epsilon":
        explore = rng.random(k) < parameter
        draws = iter(k + rng.permutation(pool)[: int(explore.sum())])
        indices = [int(next(draws)) if e else p for p, e in enumerate(explore)]
        props = [parameter / pool if e else 1.0 - parameter for e in explore]
        return Placement(indices, props, explore.tolist(), pool)
    if policy == "softmax":
        top = np.asarray(scores[: k + pool], dtype=np.float64)
        logits = (top - top.max()) / (max(parameter, 1e-6) * (float(top.std()) or 1.0))
        weights = np.exp(logits)
        free = np.ones(len(top), dtype=bool)
        indices, props = [], []
        for p in range(k):
            probs = np.where(free, weights, 0.0)
            probs /= probs.sum()
            pick = int(rng.choice(len(top), p=probs))
            indices.append(pick)
            props.append(float(probs[pick]))
            free[pick] = False
        return Placement(indices, props, [i != p for p, i in enumerate(indices)], pool)
    raise ValueError(f"exploration policy must be one of {POLICIES}, got {policy!r}")
