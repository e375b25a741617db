"""The policy stage measured offline on an evaluation bundle, with the serving code itself.

Every figure runs the ranking tier's own ranker (ranking_service/seq_ranker.py on the bundle's ONNX
graphs) and the gateway's own policy functions (gateway/policy/), on the TEST phase of the split the
bundle was trained for (`lmrec train --holdout`), so they describe what is served:

  1. negatives: ratings <= 2 read as negatives (out of the context, similar items pushed down, at the
     served low-rating strength and a sweep of others) against every rating as interest, NDCG@10 on the
     test targets the user rated >= 4;
     Also: what the event-weighted blend (a purchase counting more than a view) costs the trained ranker;
  2. faithfulness of the HISTORY_ITEM reason: over every test user's top 10, removing the cited history
     item lowers the item's score more than removing a random history item (re-scored through the
     ranker's own context path, not the attribution's); and how often the cited item is the single most
     influential one by leave-one-out over the whole history;
  3. diversity: NDCG@10 against ILD@10 for MMR strengths λ (the PNG in docs/evaluation/);
  4. exploration: a simulated user clicks a shown item when it is their held-out test item; ε = 0.1
     traffic is logged with the served propensities, and IPS / SNIPS / DR estimates of the greedy
     policy's click rate are checked against the greedy policy's click rate on the same users.

    python bench/policy_eval.py --bundle artifacts/lmrec-ml100k-eval [--data PATH] [--out docs/evaluation]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from gateway.policy.diversity import mmr_order
from gateway.policy.exploration import place, rng_for
from gateway.policy.feedback import RATING, EventWeights
from lmrec.bundle import load_manifest
from ranking_service.ranker import RankContext, RankerOptions
from training import metrics, ope
from training.beyond_accuracy import attribute_intra_list_diversity, intra_list_diversity
from training.evaluate import pretrained_item_vectors
from training.lm_scores import BundleScorer
from training.split import evaluation_split

TOP = 10
CANDIDATES = 200  # the gateway's default num_candidates
LAMBDAS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
# Effective strengths of a low rating (negative_penalty x EventWeights.low_rating).
PENALTIES = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
EPSILON = 0.1
POOL = 50  # the default exploration pool
VISITS = 20  # simulated requests per user
BLENDS = (0.0, 0.05, 0.1, 0.2)


def split_for(bundle: Path, data_path: str | None):
    try:
        manifest, dataset, data = evaluation_split(bundle, data_path)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    return dataset, data


def ndcg_of(tops: np.ndarray, targets: np.ndarray) -> np.ndarray:
    hit = tops == targets[:, None]
    ranks = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, tops.shape[1] + 1)
    return metrics.per_user_metrics(ranks)["ndcg@10"]


class Served:
    """The ranker as the worker runs it, over the split's catalogue."""

    def __init__(self, bundle: Path, data) -> None:
        self.scorer = BundleScorer(bundle, "int8", data, "test")
        self.ranker = self.scorer.ranker
        self.items = self.scorer.items
        self.data = data
        self.history = data.history_sequences("test")

    def context(self, u: int, positives: np.ndarray, negatives=()) -> RankContext:
        ids = self.data.item_ids
        return RankContext(self.data.user_ids[u], [ids[i] for i in positives],
                           negative_item_ids=tuple(ids[i] for i in negatives))

    def scores(self, ctx: RankContext, seen: np.ndarray) -> np.ndarray:
        s = self.ranker.score(ctx, None, self.items).astype(np.float64)
        s[seen] = -np.inf
        return s

    def candidates(self, ctx: RankContext, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The served list before the policy: the best CANDIDATES (retrieval), re-scored by Rank over those
        candidates only (the negative penalty's z-scores are per request), best first."""
        plain = self.ranker.score(RankContext(ctx.user_id, ctx.history_item_ids), None, self.items)
        plain = plain.astype(np.float64)
        plain[seen] = -np.inf
        pool = np.argsort(-plain, kind="stable")[:CANDIDATES]
        s = self.ranker.score(ctx, None, self.items[pool]).astype(np.float64)
        order = np.argsort(-s, kind="stable")
        return pool[order], s[order]


def negatives_experiment(served: Served, dataset, data) -> dict:
    rating = {(x.user_id, x.item_id): x.rating for x in dataset.interactions}
    users = [u for u in range(data.n_users)
             if (rating.get((data.user_ids[u], data.item_ids[data.test_items[u]])) or 0) >= 4]
    weights = EventWeights()
    rows = {}
    for strength in (None, "served", *PENALTIES):
        ndcg = []
        for u in users:
            hist = served.history[u]
            values = np.array([rating.get((data.user_ids[u], data.item_ids[i])) or 5 for i in hist])
            low = values <= 2
            if strength is None:
                ctx = served.context(u, hist)
            else:
                ctx = served.context(u, hist[~low], hist[low])
                # The ranker multiplies each weight by its negative_penalty (the served default here).
                weight = (weights.of_negative(RATING) if strength == "served"
                          else strength / RankerOptions().negative_penalty)
                ctx = replace(ctx, negative_weights=(weight,) * int(low.sum()))
            ids, _ = served.candidates(ctx, hist)
            ndcg.append(ndcg_of(ids[None, :TOP], data.test_items[[u]])[0])
        rows["all positive" if strength is None else
             "low ratings negative, served default" if strength == "served" else
             f"low ratings negative, every one at strength {strength}"] = np.array(ndcg)
    base = rows["all positive"]
    out = {"users": len(users), "rule": "targets rated >= 4; negatives = the history's ratings <= 2", "rows": {}}
    for name, values in rows.items():
        out["rows"][name] = {"ndcg@10": round(float(values.mean()), 4),
                             "relative": round(float(values.mean() / base.mean() - 1), 4),
                             "p_vs_all_positive": None if values is base else
                             round(metrics.paired_permutation_test(values, base)["p_value"], 3)}
    return out


def blend_experiment(served: Served, data) -> dict:
    """What the event-weighted blend costs the trained ranker when every event weighs the same (ML-100K's
    ratings): the price of letting a purchase count more than a view."""
    rows = {}
    for blend in BLENDS:
        served.ranker.options = RankerOptions(event_weight_blend=blend)
        tops = []
        for u in range(data.n_users):
            hist = served.history[u]
            tops.append(served.candidates(served.context(u, hist), hist)[0][:TOP])
        rows[str(blend)] = round(float(ndcg_of(np.array(tops), data.test_items).mean()), 4)
    served.ranker.options = RankerOptions()
    return {"ndcg@10_by_blend": rows}


def faithfulness_experiment(served: Served, data, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    beats_random, single_most, pairs, mismatch = 0, 0, 0, 0.0
    similarity_agrees = most_recent = 0
    for u in range(data.n_users):
        hist = served.history[u]
        ctx = served.context(u, hist)
        ids, _ = served.candidates(ctx, hist)
        top = ids[:TOP]
        cand = served.items[top]
        found = served.ranker.attribute(ctx, None, cand)
        # Every item the model reads (its last max_len), not only the explain_window the attribution tries.
        window = list(hist[-served.ranker.max_len:])
        full = cand @ served.ranker.context_vector(ctx, None)
        # Remove each context item from the user's whole history (an older item then enters the model's
        # window) and re-score through the ranker's own context path: the real counterfactual, which the
        # attribution's leave-one-out over the window approximates.
        position = {item: p for p, item in enumerate(hist)}
        drops = np.empty((len(top), len(window)))
        for j, item in enumerate(window):
            vec = served.ranker.context_vector(served.context(u, np.delete(hist, position[item])), None)
            drops[:, j] = full - (cand @ vec if vec is not None else 0.0)
        for n in range(len(top)):
            cited = window.index(data.item_index[found.history_item_ids[found.history_index[n]]])
            most_recent += cited == len(window) - 1
            pairs += 1
            mismatch = max(mismatch, abs(float(drops[n, cited]) - float(found.history_drop[n])))
            other = rng.integers(len(window))
            beats_random += drops[n, cited] > drops[n, other]
            single_most += drops[n, cited] >= drops[n].max() - 1e-6
            text = served.ranker.text_vectors(served.items[top[[n]]])
            sims = (text @ served.ranker.text_vectors(served.items[window]).T)[0]
            similarity_agrees += int(np.argmax(sims)) == cited
    return {"pairs": pairs,
            "cited_falls_more_than_random": round(beats_random / pairs, 4),
            "random_draw": "uniform over the items in the model's context window (the last max_len), the cited "
                           "one included (a tie then)",
            "cited_is_single_most_influential": round(single_most / pairs, 4),
            "explain_window": served.ranker.options.explain_window, "context_window": served.ranker.max_len,
            "cites_the_most_recent_item": round(most_recent / pairs, 4),
            "max_abs_gap_attribution_vs_rescored": mismatch,
            "most_similar_history_item_is_most_influential": round(similarity_agrees / pairs, 4)}


def diversity_experiment(served: Served, data, out: Path) -> dict:
    pretrained = pretrained_item_vectors(data)
    tops = {lam: [] for lam in LAMBDAS}
    for u in range(data.n_users):
        hist = served.history[u]
        ids, scores = served.candidates(served.context(u, hist), hist)
        window = ids[: max(5 * TOP, 50)]
        vectors = served.ranker.text_vectors(served.items[window])
        for lam in LAMBDAS:
            tops[lam].append(window[mmr_order(scores[: len(window)], vectors, TOP, lam)])
    rows = {}
    served_text = served.ranker.text_vectors(served.items)
    for lam in LAMBDAS:
        t = np.array(tops[lam])
        rows[str(lam)] = {"ndcg@10": round(float(ndcg_of(t, data.test_items).mean()), 4),
                          "ild@10": round(intra_list_diversity(t, pretrained)[0], 4),
                          "ild_served_vectors@10": round(intra_list_diversity(t, served_text)[0], 4),
                          "ild_attr@10": round(attribute_intra_list_diversity(t, data.item_attributes)[0], 4)}
    base = rows["0.0"]
    for row in rows.values():
        row["ndcg_change"] = round(row["ndcg@10"] / base["ndcg@10"] - 1, 4)
        row["ild_change"] = round(row["ild@10"] / base["ild@10"] - 1, 4)
    ok = [lam for lam, row in rows.items() if row["ndcg_change"] >= -0.03]
    best = max(ok, key=lambda lam: rows[lam]["ild@10"])
    # Reference: lists of 10 catalogue items drawn at random, which no relevance-aware list should beat.
    rng = np.random.default_rng(0)
    random_lists = np.array([rng.choice(data.n_items, TOP, replace=False) for _ in range(data.n_users)])
    random_ild = intra_list_diversity(random_lists, pretrained)[0]
    random_attr = attribute_intra_list_diversity(random_lists, data.item_attributes)[0]
    _plot(rows, out / f"{data.dataset_name}_diversity.png")
    return {"rows": rows, "recommended_lambda": float(best),
            "random_lists": {"ild@10": round(random_ild, 4), "ild_attr@10": round(random_attr, 4),
                             "ild_change": round(random_ild / base["ild@10"] - 1, 4),
                             "ild_attr_change": round(random_attr / base["ild_attr@10"] - 1, 4)},
            "target": "ILD@10 +20% for <= 3% NDCG@10 loss",
            "target_met": rows[best]["ild_change"] >= 0.2 and rows[best]["ndcg_change"] >= -0.03,
            "ild_space": "ild@10: pre-trained MiniLM vectors (as the evaluation's table); MMR uses the bundle's "
                         "fine-tuned text vectors (ild_served_vectors@10)"}


def _plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [r["ild@10"] for r in rows.values()]
    ys = [r["ndcg@10"] for r in rows.values()]
    ax.plot(xs, ys, marker="o")
    for lam, x, y in zip(rows, xs, ys):
        ax.annotate(f"λ={lam}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("ILD@10 (pre-trained LM vectors)")
    ax.set_ylabel("NDCG@10")
    ax.set_title("Diversity (MMR) trade-off, ML-100K test")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def exploration_experiment(served: Served, data, seed: int = 0) -> dict:
    rows = {k: [] for k in ("reward", "p0", "greedy_rank", "position", "user", "pool")}
    greedy_reward, greedy_user = [], []
    for u in range(data.n_users):
        hist = served.history[u]
        ids, scores = served.candidates(served.context(u, hist), hist)
        target = data.test_items[u]
        greedy_reward.extend((ids[:TOP] == target).astype(float))
        greedy_user.extend([u] * TOP)
        for visit in range(VISITS):
            placed = place(list(scores), TOP, "epsilon", EPSILON, POOL, rng_for(f"sim-{seed}-{u}-{visit}"))
            for p, (g, prop) in enumerate(zip(placed.indices, placed.propensities)):
                rows["reward"].append(float(ids[g] == target))
                rows["p0"].append(prop)
                rows["greedy_rank"].append(g)
                rows["position"].append(p)
                rows["user"].append(u)
                rows["pool"].append(placed.pool_size)
    cols = {k: np.asarray(v) for k, v in rows.items()}
    pe = ope.greedy_target_probability(cols["greedy_rank"], cols["position"])
    q = ope.rank_click_rates(cols["greedy_rank"], cols["reward"], TOP + POOL)
    q_logged, q_target = ope.reward_predictions(q, cols["greedy_rank"], cols["position"],
                                               np.full(len(pe), TOP), 0.0, cols["pool"])
    # Users are the bootstrap unit: a user's 20 visits share one target.
    estimates = ope.estimate(cols["reward"], cols["p0"], pe, cols["user"], propensity_kind="marginal",
                             q_logged=q_logged, q_target=q_target, seed=seed)
    truth = ope.on_policy_value(np.asarray(greedy_reward), np.asarray(greedy_user), seed=seed)
    inside = {name: e["ci95"][0] <= truth["estimate"] <= e["ci95"][1] for name, e in estimates["estimators"].items()}
    return {"simulation": f"{data.n_users} users x {VISITS} requests, epsilon={EPSILON}, pool {POOL}, k={TOP}; "
                          "a click = the shown item is the user's held-out test item",
            "logged_click_rate": round(float(cols["reward"].mean()), 5),
            "greedy_on_policy": truth, "ope": estimates, "truth_inside_ci": inside}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data")
    parser.add_argument("--out", type=Path, default=Path("docs/evaluation"))
    parser.add_argument("--only", choices=["negatives", "blend", "faithfulness", "diversity", "exploration"],
                        action="append")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    dataset, data = split_for(args.bundle, args.data)
    served = Served(args.bundle, data)
    result = {"bundle": load_manifest(args.bundle).model_version, "split": data.config.as_dict(),
              "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores"}
    steps = {"negatives": lambda: negatives_experiment(served, dataset, data),
             "blend": lambda: blend_experiment(served, data),
             "faithfulness": lambda: faithfulness_experiment(served, data),
             "diversity": lambda: diversity_experiment(served, data, args.out),
             "exploration": lambda: exploration_experiment(served, data)}
    path = args.out / f"{data.dataset_name}_policy.json"
    if path.exists():
        result = {**json.loads(path.read_text()), **result}
    for name, step in steps.items():
        if args.only and name not in args.only:
            continue
        t = time.perf_counter()
        result[name] = step()
        result[name]["seconds"] = round(time.perf_counter() - t, 1)
        print(name, json.dumps(result[name], indent=1, default=float))
    result["seconds"] = round(time.perf_counter() - started, 1)
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
