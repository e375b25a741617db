"""Multi-task on ML-100K: the rating head on the evaluation bundle's frozen trunk, against rating baselines,
and what blending it into the next-item ranking buys on the targets the user liked.

On the split the bundle was trained for (its manifest's split config; `lmrec train --holdout`):
  1. rating RMSE on each user's test target: global mean, biased MF (training/baselines/biased_mf.py)
     and the rating head (training/rating_head.py), each tuned on validation RMSE and refitted on the
     test-phase history's ratings; bootstrap CIs over users and paired sign-flip tests;
  2. NDCG@10 / HR@10 on the users whose test target is rated >= 4, for the served next-item scores alone
     (weight 0) and blended with the head (`combined_scores`) at a sweep of weights, the weight chosen on
     validation; and NDCG@10 over every user at the same weights (what the blend costs elsewhere).
The head reads the trunk through the bundle's FP32 context graph and item vectors (the ranking tier's
own graphs; a parity check against the served path is recorded). The next-item scores are the served
ones (BundleScorer, INT8 runtime, serving options), i.e. the `lmrec` row of docs/evaluation.md.

    python bench/multitask_eval.py --bundle artifacts/lmrec-ml100k-eval [--data PATH] [--out docs/evaluation]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from lmrec.bundle import Bundle
from ranking_service.ranker import RankContext
from ranking_service.rating_head import combined_scores
from training import metrics
from training.baselines.biased_mf import Ratings, fit_biased_mf, rmse, tune_biased_mf
from training.evaluate import machine_description
from training.lm_scores import BundleScorer
from training.rating_export import BundleTrunk
from training.rating_head import (RatingHeadConfig, fit_rating_head, phase_ratings, phase_targets, predict_targets,
                                  prefix_contexts, rating_lookup)
from training.split import evaluation_split

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)
LIKED = 4.0  # "rated >= 4": the targets the user liked
SHRINKAGES = (1.0, 2.0, 5.0, 15.0)
PARITY_USERS = 50


def split_for(bundle: Path, data_path: str | None):
    try:
        manifest, dataset, data = evaluation_split(bundle, data_path)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    return manifest, dataset, data


def parity(bundle: Path, data, trunk: BundleTrunk, contexts: list[np.ndarray]) -> dict:
    """The head's inputs against the served path's (graphs only: the ranker before its event-weight blend)."""
    scorer = BundleScorer(bundle, "fp32", data, "test", graphs_only=True)
    history = data.history_sequences("test")
    users = [u for u in range(data.n_users) if len(history[u])][:PARITY_USERS]
    ctx_diff = max(float(np.abs(scorer.ranker.context_vector(
        RankContext(data.user_ids[u], [data.item_ids[i] for i in history[u]]), None)[:trunk.dim]
        - contexts[u][len(history[u])]).max()) for u in users)
    return {"users": len(users), "context_max_abs_diff": ctx_diff,
            "item_vector_max_abs_diff": float(np.abs(scorer.items[:, :trunk.dim] - trunk.item_vectors).max())}


def _ratings(histories: list[np.ndarray], ratings: list[np.ndarray]) -> Ratings:
    users = np.concatenate([np.full(len(h), u) for u, h in enumerate(histories)])
    items, values = np.concatenate(histories), np.concatenate(ratings)
    rated = ~np.isnan(values)
    return Ratings(users[rated], items[rated], values[rated])


def _targets(data, phase, target_values: np.ndarray) -> Ratings:
    users = np.flatnonzero((data.targets(phase) >= 0) & ~np.isnan(target_values))
    return Ratings(users, data.targets(phase)[users], target_values[users])


def _rmse_row(pred: np.ndarray, truth: np.ndarray, validation_rmse: float, **extra) -> dict:
    sq = (pred - truth) ** 2
    lo, hi = metrics.bootstrap_ci(sq)
    return {"rmse": round(float(np.sqrt(sq.mean())), 4),
            "ci95": [round(float(np.sqrt(lo)), 4), round(float(np.sqrt(hi)), 4)],
            "validation_rmse": round(validation_rmse, 4), **extra}


def _paired(a: np.ndarray, b: np.ndarray) -> dict:
    test = metrics.paired_permutation_test(a, b)
    return {"mean_diff_squared_error": round(test["mean_diff"], 5), "p_value": round(test["p_value"], 4)}


def head_grid() -> list[RatingHeadConfig]:
    """Shrinkages on the bias-only head (cheap), then the MLP variants at the best shrinkages (`refine`)."""
    return [RatingHeadConfig(hidden=0, item_shrinkage=si, user_shrinkage=su, epochs=3)
            for si in SHRINKAGES for su in SHRINKAGES]


def refine(base: RatingHeadConfig) -> dict[str, RatingHeadConfig]:
    mlp = replace(base, hidden=64, epochs=40)
    return {"mlp64": mlp, "mlp64 wd1e-1": replace(mlp, weight_decay=1e-1), "mlp16": replace(mlp, hidden=16),
            "mlp128": replace(mlp, hidden=128), "mlp64 final-context examples": replace(mlp, examples="final"),
            "mlp64 no history-rating offset": replace(mlp, user_shrinkage=1e9)}


def rating_experiment(data, lookup, contexts, trunk) -> tuple[dict, dict]:
    """RMSE rows; also the heads fitted on each phase (the blend reuses them)."""
    hist = {p: phase_ratings(data, lookup, p) for p in ("validation", "test")}
    seqs = {p: data.history_sequences(p) for p in ("validation", "test")}
    val_t, test_t = _targets(data, "validation", hist["validation"][1]), _targets(data, "test", hist["test"][1])
    seconds = {}

    t = time.perf_counter()
    train_val, train_test = _ratings(seqs["validation"], hist["validation"][0]), _ratings(seqs["test"], hist["test"][0])
    mf_config, mf_val_rmse, mf_trace = tune_biased_mf(train_val, val_t, data.n_users, data.n_items)
    mf = fit_biased_mf(train_test, data.n_users, data.n_items, mf_config)
    mf_pred = mf.predict(test_t.users, test_t.items)
    seconds["biased_mf_tune_and_refit"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    val_targets = phase_targets(contexts, seqs["validation"], hist["validation"][0], *_full(data, "validation", hist))
    trace, best = [], None
    candidates = {f"bias only, shrinkage item {c.item_shrinkage:g} user {c.user_shrinkage:g}": c for c in head_grid()}
    for stage in (candidates, None):
        if stage is None:  # second stage: MLP variants at the bias-only stage's best shrinkages
            stage = refine(best[2])
        for name, config in stage.items():
            _, curve = fit_rating_head(contexts, seqs["validation"], hist["validation"][0], trunk.item_vectors,
                                       config, val_targets)
            epoch = int(np.argmin(curve)) + 1
            trace.append({"name": name, **config.as_dict(), "best_epochs": epoch,
                          "validation_rmse": round(min(curve), 5)})
            if best is None or min(curve) < best[0]:
                best = (min(curve), name, replace(config, epochs=epoch))
    val_head, _ = fit_rating_head(contexts, seqs["validation"], hist["validation"][0], trunk.item_vectors, best[2])
    test_head, _ = fit_rating_head(contexts, seqs["test"], hist["test"][0], trunk.item_vectors, best[2])
    test_targets = phase_targets(contexts, seqs["test"], hist["test"][0], *_full(data, "test", hist))
    head_pred = predict_targets(test_head, test_targets, trunk.item_vectors)
    seconds["rating_head_tune_and_refit"] = round(time.perf_counter() - t, 1)
    if not np.array_equal(np.flatnonzero(~np.isnan(_full(data, "test", hist)[1])), test_t.users):
        raise AssertionError("the head's and the baselines' test users differ")

    truth = test_t.values
    mean_pred = np.full(len(truth), train_test.values.mean())
    mean_val = float(rmse(np.full(len(val_t.values), train_val.values.mean()), val_t.values))
    result = {
        "test_users": int(len(truth)), "validation_users": int(len(val_t.values)),
        "train_ratings": {"validation_phase": int(len(train_val.values)), "test_phase": int(len(train_test.values))},
        "rows": {
            "global mean": _rmse_row(mean_pred, truth, mean_val),
            "biased MF": _rmse_row(mf_pred, truth, mf_val_rmse, config=mf_config.as_dict()),
            "rating head": _rmse_row(head_pred, truth, best[0], config=best[2].as_dict(), variant=best[1]),
        },
        "slices": _slices(data.cold_items[test_t.items], truth,
                          {"global mean": mean_pred, "biased MF": mf_pred, "rating head": head_pred}),
        "paired": {
            "rating head vs biased MF": _paired((head_pred - truth) ** 2, (mf_pred - truth) ** 2),
            "biased MF vs global mean": _paired((mf_pred - truth) ** 2, (mean_pred - truth) ** 2),
            "rating head vs global mean": _paired((head_pred - truth) ** 2, (mean_pred - truth) ** 2),
        },
        "tuning": {"biased_mf": mf_trace, "rating_head": trace},
        "seconds": seconds,
    }
    return result, {"validation": val_head, "test": test_head, "hist": hist}


def _slices(cold: np.ndarray, truth: np.ndarray, predictions: dict[str, np.ndarray]) -> dict:
    """RMSE on warm and cold test targets: a cold item has no rating (and no id embedding) in training."""
    return {name: {"users": int(keep.sum()),
                   **{model: round(rmse(pred[keep], truth[keep]), 4) for model, pred in predictions.items()}}
            for name, keep in (("warm", ~cold), ("cold", cold))}


def _full(data, phase, hist) -> tuple[np.ndarray, np.ndarray]:
    return data.targets(phase), hist[phase][1]


def blend_experiment(bundle: Path, data, contexts, trunk, heads) -> dict:
    """NDCG@10 / HR@10 of the served next-item scores blended with the head, per weight and phase."""
    rows = {}
    for phase in ("validation", "test"):
        users = data.eval_users(phase)
        target_rating = heads["hist"][phase][1][users]
        seqs, ratings = data.history_sequences(phase), heads["hist"][phase][0]
        head = heads[phase]
        scores = BundleScorer(bundle, "int8", data, phase).score(users).astype(np.float64)
        metrics.mask_history(scores, data.history_matrix(phase), users)
        ctx = np.stack([contexts[u][len(seqs[u])] for u in users])
        predicted = head.predict(ctx, head.offsets([seqs[u] for u in users], [ratings[u] for u in users]),
                                 trunk.item_vectors)
        per_weight = {}
        for w in WEIGHTS:
            ranks = metrics.target_ranks(combined_scores(scores, predicted, w), data.targets(phase)[users])
            per_weight[w] = metrics.per_user_metrics(ranks)
        rows[phase] = (users, target_rating >= LIKED, per_weight)

    _, liked_val, val = rows["validation"]
    val_curve = {w: float(m["ndcg@10"][liked_val].mean()) for w, m in val.items()}
    chosen = max(WEIGHTS, key=lambda w: (round(val_curve[w], 6), -w))  # ties go to the smaller weight
    users, liked, test = rows["test"]

    def cell(values: np.ndarray, base: np.ndarray) -> dict:
        return {"value": round(float(values.mean()), 5),
                "p_vs_weight_0": round(metrics.paired_permutation_test(values, base)["p_value"], 4)}

    curve = {str(w): {"rated_ge4_ndcg@10": cell(m["ndcg@10"][liked], test[0.0]["ndcg@10"][liked]),
                      "rated_ge4_hr@10": cell(m["hr@10"][liked], test[0.0]["hr@10"][liked]),
                      "all_users_ndcg@10": cell(m["ndcg@10"], test[0.0]["ndcg@10"]),
                      "below4_ndcg@10": cell(m["ndcg@10"][~liked], test[0.0]["ndcg@10"][~liked])}
             for w, m in test.items()}

    def summary(w: float) -> dict:
        liked_ndcg = test[w]["ndcg@10"][liked]
        return {"rated_ge4_ndcg@10": round(float(liked_ndcg.mean()), 5),
                "rated_ge4_ndcg@10_ci95": [round(x, 5) for x in metrics.bootstrap_ci(liked_ndcg)],
                "rated_ge4_hr@10": round(float(test[w]["hr@10"][liked].mean()), 5),
                "all_users_ndcg@10": round(float(test[w]["ndcg@10"].mean()), 5)}

    base, best = test[0.0]["ndcg@10"][liked], test[chosen]["ndcg@10"][liked]
    return {
        "weights": list(WEIGHTS), "chosen_weight": chosen,
        "rule": "the weight with the best validation NDCG@10 on validation targets rated >= 4 (ties: the smaller)",
        "validation": {"users_rated_ge4": int(liked_val.sum()), "users": int(len(liked_val)),
                       "rated_ge4_ndcg@10_by_weight": {str(w): round(v, 5) for w, v in val_curve.items()},
                       "all_users_ndcg@10_by_weight": {str(w): round(float(m["ndcg@10"].mean()), 5)
                                                       for w, m in val.items()}},
        "test": {"users_rated_ge4": int(liked.sum()), "users": int(len(users)), "curve": curve,
                 "weight_0": summary(0.0), "chosen": summary(chosen),
                 "chosen_vs_weight_0": {"rated_ge4_ndcg@10_relative": round(float(best.mean() / base.mean() - 1), 4),
                                        "p_value": round(metrics.paired_permutation_test(best, base)["p_value"], 4),
                                        "test": "two-sided paired sign-flip permutation test over users"},
                 "best_test_weight_in_hindsight": max(WEIGHTS, key=lambda w: test[w]["ndcg@10"][liked].mean())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("artifacts/lmrec-ml100k-eval"))
    parser.add_argument("--data")
    parser.add_argument("--out", type=Path, default=Path("docs/evaluation"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    load = os.getloadavg()[0]
    manifest, dataset, data = split_for(args.bundle, args.data)
    lookup = rating_lookup(dataset, data)
    trunk = BundleTrunk(Bundle(args.bundle, manifest), data)
    seconds = {}
    t = time.perf_counter()
    # Every prefix of the test-phase history: the validation phase's histories are prefixes of it.
    contexts = prefix_contexts(trunk.encode, data.history_sequences("test"), trunk.max_len)
    seconds["trunk_prefix_contexts"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    checked = parity(args.bundle, data, trunk, contexts)
    seconds["parity"] = round(time.perf_counter() - t, 1)
    rating, heads = rating_experiment(data, lookup, contexts, trunk)
    print(json.dumps(rating["rows"], indent=1), json.dumps(rating["paired"], indent=1))
    t = time.perf_counter()
    blend = blend_experiment(args.bundle, data, contexts, trunk, heads)
    seconds["blend"] = round(time.perf_counter() - t, 1)
    print(json.dumps(blend["test"]["weight_0"]), json.dumps(blend["test"]["chosen"]), blend["chosen_weight"])
    result = {
        "dataset": data.dataset_name, "bundle": manifest.model_version, "bundle_dir": str(args.bundle),
        "split": data.config.as_dict(),
        "machine": {**machine_description(), "load_average_at_start": round(load, 2),
                    "threads": "1 (torch and ONNX Runtime)"},
        "command": "python bench/multitask_eval.py --bundle " + str(args.bundle),
        "protocol": {
            "trunk": "the evaluation bundle's next-item model, frozen; the head reads its FP32 context graph's "
                     "unit context (before the serving event-weight blend) and the items' collaborative vectors",
            "rating_training": "each phase's history ratings; a rating is predicted from the context of the "
                               "history before it, and its own value never enters its inputs",
            "tuning": "validation RMSE (validation targets, validation-phase ratings), then a refit on the "
                      "test-phase history's ratings (train + validation) with the chosen configuration",
            "validation_caveat": "the bundle's trunk was fitted on train + validation interactions (not "
                                 "ratings), so its validation next-item scores are flattered; the blend weight "
                                 "chosen there leans towards the next-item head",
            "next_item_scores": "served: BundleScorer on the INT8 runtime with serving options, history masked",
            "blend": "z(next-item score) + weight x z(predicted rating), standardised per user over the "
                     "unmasked catalogue (ranking_service/rating_head.combined_scores)",
        },
        "parity": checked,
        "rating": rating,
        "blend": blend,
        "wall_seconds": {**seconds, **rating.pop("seconds"), "total": round(time.perf_counter() - started, 1)},
    }
    path = args.out / f"{data.dataset_name}_multitask.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
