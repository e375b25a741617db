"""A second head on the trained next-item model: how much the user will like an item (its rating).

The trunk is the next-item model (training/lm_model.py), trained first and then frozen: this head only
reads what it serves, the unit context ĥ of a history (the ContextModel graph) and an item's
collaborative vector e (the first `dim` coordinates of its served vector). It predicts

    r̂ = μ + b_i + a·δ_u + MLP([ĥ, e, ĥ⊙e, δ_u])

  * μ, b_i: the training ratings' mean and each item's shrunk mean residual (closed form; 0 for items
    without ratings, e.g. cold or upserted ones);
  * δ_u: the shrunk mean residual r - μ - b_j of the ratings in the history itself, computed per request.
    The trunk never saw a rating, so ĥ knows what a user watches, not how harshly they rate; δ_u is
    the user bias of a factorisation model without a per-user parameter, so it serves any user;
  * a and the MLP are fitted by least squares on the ratings of the phase's history, each one predicted
    from the context of the history *before* it (the served situation: the rated item is not in the
    context), so no rating ever feeds its own prediction.
Which variant (MLP width, the final-context alternative, shrinkage) is chosen on validation RMSE:
bench/multitask_eval.py. The fitted head is plain numpy (ranking_service/rating_head.py, what the ranking
tier serves); `combined_scores` there blends the two heads per request; training/rating_export.py puts
the head into a bundle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from lmrec_data.datasets import Dataset
from lmrec.errors import FailedPrecondition
from ranking_service.rating_head import RatingHead
from training.split import Phase, SplitData

Encoder = Callable[[list[np.ndarray]], np.ndarray]  # histories (item indices) -> unit contexts [B, d]


class RatingHeadUnavailable(FailedPrecondition):
    """The data has no ratings, so there is no rating head (and no rating objective to weigh)."""


def rating_lookup(dataset: Dataset, data: SplitData) -> dict[tuple[int, int], float]:
    """(dense user, dense item) -> rating of the interaction the split kept (a pair's first occurrence).

    Raises:
        RatingHeadUnavailable: no interaction of `dataset` carries a rating.
    """
    lookup: dict[tuple[int, int], float] = {}
    for user, events in dataset.histories(data.config.tie_break).items():
        u = data.user_index.get(user)
        if u is None:
            continue
        for e in events:
            i = data.item_index.get(e.item_id)
            if i is not None and e.rating is not None:
                lookup.setdefault((u, i), float(e.rating))
    if not lookup:
        raise RatingHeadUnavailable(f"dataset {dataset.name!r} has no ratings: the rating head is absent")
    return lookup


def phase_ratings(data: SplitData, lookup: dict, phase: Phase) -> tuple[list[np.ndarray], np.ndarray]:
    """Per user, the ratings of the `phase` history (aligned with history_sequences) and of the target;
    NaN where there is none."""
    histories, targets = data.history_sequences(phase), data.targets(phase)
    history = [np.array([lookup.get((u, int(i)), np.nan) for i in seq], dtype=np.float64)
               for u, seq in enumerate(histories)]
    target = np.array([lookup.get((u, int(t)), np.nan) if t >= 0 else np.nan for u, t in enumerate(targets)])
    return history, target


def prefix_contexts(encode: Encoder, histories: list[np.ndarray], max_len: int,
                    batch_size: int = 1024) -> list[np.ndarray]:
    """Per user [len + 1, d]: row t is the trunk's context of history[:t] (its last `max_len` items, as
    served); row 0, the empty history, is zeros. Prefixes of similar length are batched together."""
    prefixes = [(u, t) for u, seq in enumerate(histories) for t in range(1, len(seq) + 1)]
    prefixes.sort(key=lambda p: min(p[1], max_len))
    out: list[np.ndarray | None] = [None] * len(histories)
    for start in range(0, len(prefixes), batch_size):
        batch = prefixes[start:start + batch_size]
        ctx = encode([histories[u][max(0, t - max_len):t] for u, t in batch])
        for (u, t), row in zip(batch, ctx):
            if out[u] is None:
                out[u] = np.zeros((len(histories[u]) + 1, ctx.shape[1]), dtype=np.float32)
            out[u][t] = row
    dim = 0 if not prefixes else out[prefixes[0][0]].shape[1]
    return [o if o is not None else np.zeros((1, dim), dtype=np.float32) for o in out]


@dataclass(frozen=True)
class RatingHeadConfig:
    hidden: int = 64  # 0: no MLP (μ + b_i + a·δ_u)
    examples: str = "next"  # "next": context before each rating; "final": whole-history context, every rating
    item_shrinkage: float = 5.0
    user_shrinkage: float = 5.0
    weight_decay: float = 1e-4
    lr: float = 5e-4  # 2e-3 reached the same validation RMSE with a noisier curve (epoch choice by luck)
    batch_size: int = 512
    epochs: int = 20
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RatingTargets:
    """Held-out ratings to predict: each user's whole-history context, its history (for δ), the target."""

    contexts: np.ndarray
    histories: list[np.ndarray]
    ratings: list[np.ndarray]
    items: np.ndarray
    values: np.ndarray


def phase_targets(contexts: list[np.ndarray], histories: list[np.ndarray], ratings: list[np.ndarray],
                  items: np.ndarray, values: np.ndarray) -> RatingTargets:
    """The users whose target has a rating. `contexts` may come from prefix_contexts over longer histories
    that these are prefixes of (the test phase's serve the validation phase: row len(history) is the same)."""
    users = np.flatnonzero((items >= 0) & ~np.isnan(values))
    return RatingTargets(np.stack([contexts[u][len(histories[u])] for u in users]) if len(users) else
                         np.zeros((0, contexts[0].shape[1] if contexts else 0), np.float32),
                         [histories[u] for u in users], [ratings[u] for u in users], items[users], values[users])


def predict_targets(head: RatingHead, targets: RatingTargets, item_vectors: np.ndarray) -> np.ndarray:
    return head.predict_pairs(targets.contexts, head.offsets(targets.histories, targets.ratings), targets.items,
                              item_vectors)


def item_biases(histories: list[np.ndarray], ratings: list[np.ndarray], mu: float, n_items: int,
                shrinkage: float) -> np.ndarray:
    """b_i: each item's mean residual r - μ shrunk towards 0 (0 for an item with no rating)."""
    items = np.concatenate(histories) if histories else np.zeros(0, np.int64)
    values = np.concatenate(ratings) if ratings else np.zeros(0)
    rated = ~np.isnan(values)
    total = np.bincount(items[rated], values[rated] - mu, minlength=n_items)
    return total / (np.bincount(items[rated], minlength=n_items) + shrinkage)


def _examples(contexts: list[np.ndarray], histories: list[np.ndarray], ratings: list[np.ndarray],
              item_bias: np.ndarray, mu: float, config: RatingHeadConfig) -> tuple[np.ndarray, ...]:
    """(contexts, δ, items, ratings) of every rated history item; δ never includes the rating predicted."""
    ctx, off, items, values = [], [], [], []
    for c, seq, r in zip(contexts, histories, ratings):
        rated = ~np.isnan(r)
        resid = np.where(rated, r - mu - item_bias[seq], 0.0)
        if config.examples == "next":
            before_sum, before_n = np.cumsum(resid) - resid, np.cumsum(rated) - rated
            keep = rated & (np.arange(len(seq)) >= 1)  # position t: context of seq[:t]
            ctx.append(c[np.flatnonzero(keep)])
        else:  # final context; δ leaves the predicted rating out
            before_sum, before_n = resid.sum() - resid, rated.sum() - rated
            keep = rated
            ctx.append(np.repeat(c[len(seq)][None], keep.sum(), axis=0))
        off.append(before_sum[keep] / (before_n[keep] + config.user_shrinkage))
        items.append(seq[keep])
        values.append(r[keep])
    return np.concatenate(ctx), np.concatenate(off), np.concatenate(items), np.concatenate(values)


class _Net(nn.Module):
    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.user_weight = nn.Parameter(torch.tensor(1.0))
        self.mlp = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, 1)) if hidden else None
        if self.mlp is not None:
            nn.init.zeros_(self.mlp[2].weight)  # start at the bias model; the MLP learns what it misses
            nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        out = self.user_weight * offsets
        return out if self.mlp is None else out + self.mlp(x).squeeze(-1)


def _to_head(net: _Net, mu: float, item_bias: np.ndarray, mean: np.ndarray, std: np.ndarray,
             bounds: tuple[float, float], config: RatingHeadConfig) -> RatingHead:
    a = float(net.user_weight.detach())
    if net.mlp is None:
        empty = np.zeros(0)
        return RatingHead(mu, item_bias, config.user_shrinkage, a, np.zeros((len(mean), 0)), empty, empty, 0.0,
                          bounds)
    w1 = net.mlp[0].weight.detach().numpy().T.astype(np.float64) / std[:, None]  # fold the standardisation in
    b1 = net.mlp[0].bias.detach().numpy().astype(np.float64) - mean @ w1
    return RatingHead(mu, item_bias, config.user_shrinkage, a, w1, b1,
                      net.mlp[2].weight.detach().numpy()[0].astype(np.float64), float(net.mlp[2].bias.detach()),
                      bounds)


def fit_rating_head(contexts: list[np.ndarray], histories: list[np.ndarray], ratings: list[np.ndarray],
                    item_vectors: np.ndarray, config: RatingHeadConfig,
                    validation: RatingTargets | None = None) -> tuple[RatingHead, list[float]]:
    """Fits the head on the rated items of `histories` (one phase's history) over a frozen trunk.

    Args:
        contexts: prefix_contexts of `histories`; item_vectors: the trunk's item table [n_items, d].
        validation: when given, RMSE is measured after every epoch and the best epoch's head returned.
    Returns:
        (head, validation RMSE per epoch, empty without validation).
    Raises:
        RatingHeadUnavailable: `ratings` hold no rating.
    """
    flat = np.concatenate(ratings) if ratings else np.zeros(0)
    if not np.isfinite(flat).any():
        raise RatingHeadUnavailable("no rated interaction in the training history: the rating head is absent")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    mu = float(np.nanmean(flat))
    bounds = (float(np.nanmin(flat)), float(np.nanmax(flat)))
    item_bias = item_biases(histories, ratings, mu, len(item_vectors), config.item_shrinkage)
    ctx, off, items, values = _examples(contexts, histories, ratings, item_bias, mu, config)
    v = item_vectors[items].astype(np.float32)
    x = np.hstack([ctx, v, ctx * v, off[:, None]]).astype(np.float32)
    mean, std = x.mean(0).astype(np.float64), x.std(0).astype(np.float64) + 1e-6
    xt = torch.from_numpy(((x - mean) / std).astype(np.float32))
    ot = torch.from_numpy(off.astype(np.float32))
    yt = torch.from_numpy((values - mu - item_bias[items]).astype(np.float32))  # the residual the net fits
    net = _Net(x.shape[1], config.hidden)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    curve: list[float] = []
    best: tuple[float, RatingHead] | None = None
    for _ in range(config.epochs):
        net.train()
        for idx in np.array_split(rng.permutation(len(yt)), max(1, len(yt) // config.batch_size)):
            batch = torch.from_numpy(idx)
            loss = ((net(xt[batch], ot[batch]) - yt[batch]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        head = _to_head(net.eval(), mu, item_bias, mean, std, bounds, config)
        if validation is not None:
            error = predict_targets(head, validation, item_vectors) - validation.values
            curve.append(float(np.sqrt(np.mean(error ** 2))))
            if best is None or curve[-1] < best[0]:
                best = (curve[-1], head)
    return (best[1] if best else head), curve
