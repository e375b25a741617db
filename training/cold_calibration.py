"""Calibrates the score bias of text-only (new and cold) items on items the validation fit never saw.

An item the model never saw in training is represented by its text alone, and its score h·MLP(t) lacks
what the id embedding adds for trained items (popularity, above all), so without help a cold item almost
never reaches a top 10. The served score therefore adds a bias b to text-only items (training/lm_model.py
ItemTower's flag), and b is chosen here, on validation data only.

The proxy must behave like real cold items, which dropping trained items' id embeddings does not (their
text path was trained with them as targets; docs/tuning.md#cold-calibration-proxy). So the validation fit
runs on `SplitData.without_items(holdout)`: a seeded share of the trained items loses all its training
interactions, exactly as the split's cold items do, and the validation users whose validation item is
held out form the calibration's cold slice.

The rule, per grid point b: overall validation NDCG@10, cold HR@10 (held-out targets) and warm HR@10.
Among the points within `max_ndcg_loss` (relative) of the best NDCG, the best-NDCG one whose cold HR@10
is at least `target_ratio` x warm HR@10; when none is, the one with the best ratio. Meeting the ratio can
cost far more than the allowance (ML-100K: about 40% of NDCG@10), so the cheapest point that meets it is
recorded too, with the whole curve, in the manifest: the trade-off is on record and an operator who
values fresh items more raises the allowance.
"""

from __future__ import annotations

import numpy as np
import torch

from training.metrics import mask_history, per_user_metrics, target_ranks

GRID = tuple(round(float(b), 3) for b in np.arange(-0.3, 0.4001, 0.02))


def calibration_holdout(known: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Bool mask of a seeded `fraction` of the `known` items (at least one when fraction > 0)."""
    held = np.zeros(len(known), dtype=bool)
    candidates = np.flatnonzero(known)
    if fraction > 0 and len(candidates) > 1:
        n = min(len(candidates) - 1, max(1, int(round(len(candidates) * fraction))))
        held[np.random.default_rng(seed).choice(candidates, n, replace=False)] = True
    return held


@torch.no_grad()
def calibrate_cold_bias(trained, target_ratio: float, max_ndcg_loss: float) -> tuple[float, dict]:
    """Returns (bias, record) for a validation-phase TrainedLM, fitted on `trained.fit_data` (the split
    without the `trained.holdout` items)."""
    data, holdout = trained.fit_data, trained.holdout
    users = data.eval_users("validation")
    targets = data.val_items[users]
    cold = holdout[targets]
    if not cold.any() or cold.all():
        return 0.0, {"rule": "not calibrated: no validation target among the held-out items"}
    net = trained.net.eval()
    history = data.history_sequences("validation")
    # History items are -inf already, and stay so whatever bias is added.
    base = mask_history(net.context_scores([history[u] for u in users], net.item_vectors()),
                        data.history_matrix("validation"), users)
    text_only = (~trained.known).astype(np.float32)
    curve = []
    for bias in GRID:
        m = per_user_metrics(target_ranks(base + np.float32(bias) * text_only[None], targets))
        cold_hr, warm_hr = float(m["hr@10"][cold].mean()), float(m["hr@10"][~cold].mean())
        curve.append({"bias": bias, "ndcg@10": round(float(m["ndcg@10"].mean()), 5), "cold_hr@10": round(cold_hr, 4),
                      "warm_hr@10": round(warm_hr, 4), "ratio": round(cold_hr / warm_hr, 4) if warm_hr else 0.0})
    best = max(p["ndcg@10"] for p in curve)
    affordable = [p for p in curve if p["ndcg@10"] >= (1.0 - max_ndcg_loss) * best]
    meeting = [p for p in affordable if p["ratio"] >= target_ratio]
    chosen = (max(meeting, key=lambda p: p["ndcg@10"]) if meeting
              # Ties (a flat stretch of the curve) go to the largest bias: the same cost, kinder to new items.
              else max(affordable, key=lambda p: (p["ratio"], p["ndcg@10"], p["bias"])))
    cheapest = max((p for p in curve if p["ratio"] >= target_ratio), key=lambda p: p["ndcg@10"], default=None)
    record = {"rule": (f"best validation NDCG@10 within {max_ndcg_loss:.0%} of the curve's best, preferring cold "
                       f"HR@10 >= {target_ratio} x warm HR@10 on items held out of the validation fit"),
              "met": bool(meeting), "held_out_items": int(holdout.sum()), "cold_users": int(cold.sum()),
              "chosen": chosen, "cheapest_meeting_ratio": cheapest,
              "ndcg_cost_of_meeting_ratio": round(1.0 - cheapest["ndcg@10"] / best, 4) if cheapest else None,
              "curve": curve}
    return float(chosen["bias"]), record
