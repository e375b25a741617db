"""Diagnostic: what reserving slots of the top 10 for text-only items would trade, against the cold bias.

The served model lifts cold (text-only) items with one calibrated score bias
(training/cold_calibration.py). A bias is the same for every user, while users' score scales differ, so
lifting the right cold item for one user lifts wrong ones for others: on ML-100K, meeting "cold HR@10 ≥ ½
warm HR@10" with the bias costs 14.5% of validation NDCG@10 with 1000 LM fine-tuning steps, 26% with 100
(the bundle manifest's calibration record). This script measures the alternative a product team would
reach for: a quota of s slots per top 10, kept for the best-scored text-only items. The gateway serves
exactly that (`RecommendRequest.new_item_slots`, lmrec/slots.py), and this script ranks with the same
function.

It scores the TEST phase of a trained bundle (the only fit a bundle keeps), so its figures are a
diagnostic of the trade-off, not a tuned setting; nothing in the served system or the report's tables
reads them.

`--oracle-bound` asks how far a better text path could go. It keeps each user's scores for text-only
items as a set, so their placement against trained items is the model's, and only reorders them among
themselves by the model's score plus w x the items' true popularity, counted over the WHOLE dataset,
test and cold interactions included. That is a leak on purpose: no text model can know more about
an unseen item's general appeal, so the best of those rows bounds what any popularity-predicting text
path could reach under a quota or a bias.

    python bench/cold_slots.py --bundle artifacts/lmrec-ml100k [--data PATH] [--slots 0,1,2,3] [--oracle-bound]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from lmrec_data.datasets import load_dataset, resolve_data_path
from lmrec.slots import with_reserved_slots
from training import metrics
from training.lm_recommender import TrainedBundleRecommender
from training.split import SplitConfig, build_split

TOP = 10
SCORE_BATCH = 256
# Weights of the leaked popularity against the model's own order; the bound is the best row.
ORACLE_WEIGHTS = (0.25, 0.5, 1.0, 2.0)


def top_lists(scores: np.ndarray, text_only: np.ndarray, slots: int, depth: int) -> np.ndarray:
    """Each user's top 10 as the gateway serves it with `new_item_slots=slots` (lmrec.slots)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    return np.array([row[with_reserved_slots(row, TOP, slots, lambda i: bool(text_only[i]))] for row in order])


def measure(tops: np.ndarray, targets: np.ndarray, cold_users: np.ndarray) -> dict:
    hit = tops == targets[:, None]
    # The target's position in the served top 10; past it, any rank beyond 10 scores the same @10.
    ranks = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, TOP + 1)
    m = metrics.per_user_metrics(ranks)
    hr = m["hr@10"]
    cold, warm = float(hr[cold_users].mean()), float(hr[~cold_users].mean())
    return {"ndcg@10": round(float(m["ndcg@10"].mean()), 4), "hr@10": round(float(hr.mean()), 4),
            "cold_hr@10": round(cold, 4), "warm_hr@10": round(warm, 4),
            "ratio": round(cold / warm, 3) if warm > 0 else None}


def bias_to_ratio(scores: np.ndarray, text_only: np.ndarray, targets: np.ndarray, cold_users: np.ndarray,
                  depth: int, ratio: float = 0.5) -> dict | None:
    """The smallest bias on text-only scores (in units of their mean per-user spread) that reaches `ratio`."""
    finite = np.where(np.isfinite(scores) & text_only[None, :], scores, np.nan)
    unit = float(np.nanmean(np.nanstd(finite, axis=1)))
    for b in np.round(np.arange(0.0, 3.0001, 0.05), 2):
        lifted = scores + np.where(text_only, b * unit, 0.0)[None, :]
        m = measure(top_lists(lifted, text_only, 0, depth), targets, cold_users)
        if m["ratio"] is not None and m["ratio"] >= ratio:
            return {"bias_in_spreads": float(b), **m}
    return None


def popularity_reordered(scores: np.ndarray, text_only: np.ndarray, popularity: np.ndarray, weight: float) -> np.ndarray:
    """Each user's text-only scores, same values, reassigned in the order of (their per-user z-score +
    weight x the z-scored log popularity): a better order among unseen items, the same placement
    against trained ones."""
    sub = scores[:, text_only]
    finite = np.isfinite(sub)
    mean = np.nanmean(np.where(finite, sub, np.nan), axis=1, keepdims=True)
    spread = np.nanstd(np.where(finite, sub, np.nan), axis=1, keepdims=True) + 1e-12
    log_pop = np.log1p(popularity[text_only].astype(np.float64))
    key = np.where(finite, (sub - mean) / spread + weight * ((log_pop - log_pop.mean()) / log_pop.std())[None, :], -np.inf)
    values = -np.sort(-sub, axis=1)  # the same values, best first, masked (-inf) ones last
    reordered = np.empty_like(sub)
    np.put_along_axis(reordered, np.argsort(-key, axis=1, kind="stable"), values, axis=1)
    out = scores.copy()
    out[:, text_only] = reordered
    return out


def among_text_only(scores: np.ndarray, text_only: np.ndarray, targets: np.ndarray, cold_users: np.ndarray) -> dict:
    """Where each cold target ranks among the text-only items alone: how often a quota of s would catch it."""
    ranks = metrics.target_ranks(np.where(text_only[None, :], scores, -np.inf)[cold_users], targets[cold_users])
    return {"median_rank_among_text_only": float(np.median(ranks)),
            **{f"share_top{s}_among_text_only": round(float(np.mean(ranks <= s)), 4) for s in (1, 2, 3)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", default=None, help="dataset folder (default: LMREC_DATA or ML-100K's default)")
    parser.add_argument("--slots", default="0,1,2,3")
    parser.add_argument("--precision", default="int8", choices=["int8", "fp32"])
    parser.add_argument("--oracle-bound", action="store_true",
                        help="also rank unseen items with their leaked true popularity (an upper bound, see above)")
    args = parser.parse_args()

    dataset = load_dataset(resolve_data_path(args.data))
    data = build_split(dataset, SplitConfig())
    model = TrainedBundleRecommender(args.bundle, args.precision)
    model.fit(data, "test")
    users = np.arange(data.n_users)
    scores = np.concatenate([np.asarray(model.score(users[s:s + SCORE_BATCH]), dtype=np.float32)
                             for s in range(0, data.n_users, SCORE_BATCH)])
    metrics.mask_history(scores, data.history_matrix("test"), users)
    targets, text_only = data.targets("test"), data.cold_items
    cold_users = text_only[targets]
    print(json.dumps({"dataset": data.dataset_name, "cold_users": int(cold_users.sum()),
                      "text_only_items": int(text_only.sum()),
                      **among_text_only(scores, text_only, targets, cold_users)}))
    depth = min(data.n_items, 2000)
    slot_counts = [int(s) for s in args.slots.split(",")]
    for slots in slot_counts:
        print(json.dumps({"slots": slots, **measure(top_lists(scores, text_only, slots, depth), targets, cold_users)}))
    print(json.dumps({"bias_to_ratio_0.5": bias_to_ratio(scores, text_only, targets, cold_users, depth)}))
    if not args.oracle_bound:
        return
    counts = Counter(x.item_id for x in dataset.interactions)
    popularity = np.array([counts[item] for item in data.item_ids], dtype=np.int64)
    for weight in ORACLE_WEIGHTS:
        bound = popularity_reordered(scores, text_only, popularity, weight)
        print(json.dumps({"oracle_popularity_weight": weight, **among_text_only(bound, text_only, targets, cold_users)}))
        for slots in slot_counts:
            print(json.dumps({"oracle_popularity_weight": weight, "slots": slots,
                              **measure(top_lists(bound, text_only, slots, depth), targets, cold_users)}))
        print(json.dumps({"oracle_popularity_weight": weight,
                          "bias_to_ratio_0.5": bias_to_ratio(bound, text_only, targets, cold_users, depth)}))


if __name__ == "__main__":
    main()
