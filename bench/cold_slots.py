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

    python bench/cold_slots.py --bundle artifacts/lmrec-ml100k [--data PATH] [--slots 0,1,2,3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lmrec.datasets import load_dataset, resolve_data_path
from lmrec.slots import with_reserved_slots
from training import metrics
from training.lm_recommender import TrainedBundleRecommender
from training.split import SplitConfig, build_split

TOP = 10
SCORE_BATCH = 256


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
            "cold_hr@10": round(cold, 4), "warm_hr@10": round(warm, 4), "ratio": round(cold / warm, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", default=None, help="dataset folder (default: LMREC_DATA or ML-100K's default)")
    parser.add_argument("--slots", default="0,1,2,3")
    parser.add_argument("--precision", default="int8", choices=["int8", "fp32"])
    args = parser.parse_args()

    data = build_split(load_dataset(resolve_data_path(args.data)), SplitConfig())
    model = TrainedBundleRecommender(args.bundle, args.precision)
    model.fit(data, "test")
    users = np.arange(data.n_users)
    scores = np.concatenate([np.asarray(model.score(users[s:s + SCORE_BATCH]), dtype=np.float32)
                             for s in range(0, data.n_users, SCORE_BATCH)])
    metrics.mask_history(scores, data.history_matrix("test"), users)
    targets, text_only = data.targets("test"), data.cold_items
    cold_users = text_only[targets]
    # Rank of each cold target among the text-only items alone: how often the text path puts it first.
    among = metrics.target_ranks(np.where(text_only[None, :], scores, -np.inf)[cold_users], targets[cold_users])
    print(json.dumps({"dataset": data.dataset_name, "cold_users": int(cold_users.sum()),
                      "text_only_items": int(text_only.sum()),
                      "median_rank_among_text_only": float(np.median(among)),
                      "share_first_among_text_only": round(float(np.mean(among <= 1)), 4)}))
    depth = min(data.n_items, 2000)
    for slots in (int(s) for s in args.slots.split(",")):
        print(json.dumps({"slots": slots, **measure(top_lists(scores, text_only, slots, depth), targets, cold_users)}))


if __name__ == "__main__":
    main()
