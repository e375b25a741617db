"""The report's multi-task section (next item and rating), rendered from what bench/multitask_eval.py measured.

Reads `<out_dir>/<dataset>_multitask.json` when it exists (nothing here measures). The reading under each
table is derived from the figures and their p-values, so it stays true when they change.
"""

from __future__ import annotations

import json
from pathlib import Path

ALPHA = 0.05
HEADING = "### Multi-task: next item and rating"


def multitask_section(dataset: str, out_dir: Path) -> list[str]:
    path = Path(out_dir) / f"{dataset}_multitask.json"
    if not path.is_file():
        return []
    result = json.loads(path.read_text())
    machine = result.get("machine", {})
    lines = [HEADING, "",
             f"`{result.get('command', 'python bench/multitask_eval.py')}`: one model, two heads. The next-item "
             f"model of the evaluation bundle `{result.get('bundle')}` is the shared trunk, trained first and "
             f"frozen; a rating head (training/rating_head.py) is trained after it on the ratings of each phase's "
             f"history, reading the trunk's context and item vectors. Test phase of the same split; "
             f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
             f"{result.get('wall_seconds', {}).get('total', '?')} s in all.", ""]
    lines += _rating(result["rating"])
    lines += _blend(result["blend"], result.get("protocol", {}))
    return lines


def _rating(block: dict) -> list[str]:
    rows, slices = block["rows"], block.get("slices", {})
    warm, cold = slices.get("warm", {}), slices.get("cold", {})
    lines = [f"**Rating RMSE** on the {block['test_users']} test targets (each model tuned on validation RMSE, "
             f"then refitted on the train + validation ratings):", "",
             f"| model | RMSE | 95% CI | validation RMSE | warm targets ({warm.get('users', '?')}) "
             f"| cold targets ({cold.get('users', '?')}) |", "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        label = name + (f" ({_describe(name, row)})" if "config" in row else "")
        lines.append(f"| {label} | {row['rmse']:.4f} | {row['ci95'][0]:.4f}–{row['ci95'][1]:.4f} | "
                     f"{row['validation_rmse']:.4f} | {warm.get(name, float('nan')):.4f} | "
                     f"{cold.get(name, float('nan')):.4f} |")
    head, mf, mean = rows["rating head"]["rmse"], rows["biased MF"]["rmse"], rows["global mean"]["rmse"]
    versus = block["paired"]["rating head vs biased MF"]
    if versus["p_value"] >= ALPHA:
        verdict = (f"The rating head and biased MF are indistinguishable ({head:.4f} vs {mf:.4f}, p = "
                   f"{versus['p_value']:.2f}, paired over users' squared errors): a small head over a trunk trained "
                   f"without ratings, plus the history's own rating offset, predicts ratings as well as a "
                   f"factorisation fitted to them.")
    else:
        better = "rating head" if head < mf else "biased MF"
        verdict = (f"The {better} predicts ratings better ({head:.4f} vs {mf:.4f}, p = {versus['p_value']:.3f}, "
                   f"paired over users' squared errors).")
    text = f"{verdict} Both improve on the global mean ({mean:.4f}) by {1 - head / mean:.0%} and {1 - mf / mean:.0%}."
    ablation = {row["name"]: row["validation_rmse"] for row in block.get("tuning", {}).get("rating_head", [])}
    no_offset = next((v for k, v in ablation.items() if "no history-rating offset" in k), None)
    if no_offset is not None:
        text += (f" Without the offset (the shrunk mean residual of the ratings in the history) the head's "
                 f"validation RMSE is {no_offset:.4f} against {rows['rating head']['validation_rmse']:.4f}: the "
                 f"trunk's context says what a user watches, not how harshly they rate.")
    return lines + ["", text, ""]


def _describe(name: str, row: dict) -> str:
    c = row["config"]
    if name == "biased MF":
        return f"{c['factors']} factors, λ {c['reg']:g}, bias λ {c['bias_reg']:g}, {c['epochs']} sweeps"
    return f"{row.get('variant', '')}, {c['epochs']} epochs"


def _blend(block: dict, protocol: dict) -> list[str]:
    test, chosen = block["test"], block["chosen_weight"]
    lines = [f"**Blend** (`combined_scores`: z(next-item score) + w·z(predicted rating), per user over the "
             f"catalogue). NDCG@10 / HR@10 on the {test['users_rated_ge4']} test users whose target they rated "
             f">= 4, and NDCG@10 over all {test['users']} users and over those who rated it below 4; p: paired "
             f"sign-flip test against w = 0 (the served ranking: the `lmrec` row above). w = {chosen} was chosen "
             f"on validation "
             f"({block['rule'].split(' (')[0]}).", "",
             "| w | NDCG@10 (>= 4) | p | HR@10 (>= 4) | NDCG@10 (all) | p | NDCG@10 (< 4) | p |",
             "|---|---|---|---|---|---|---|---|"]
    for w, row in test["curve"].items():
        mark = "**" if float(w) == chosen else ""
        cells = [row["rated_ge4_ndcg@10"], row["rated_ge4_hr@10"], row["all_users_ndcg@10"], row["below4_ndcg@10"]]
        lines.append(f"| {mark}{w}{mark} | {cells[0]['value']:.4f} | {cells[0]['p_vs_weight_0']:.3f} | "
                     f"{cells[1]['value']:.4f} | {cells[2]['value']:.4f} | {cells[2]['p_vs_weight_0']:.3f} | "
                     f"{cells[3]['value']:.4f} | {cells[3]['p_vs_weight_0']:.3f} |")
    base, best = test["weight_0"], test["chosen"]
    gain, p = test["chosen_vs_weight_0"]["rated_ge4_ndcg@10_relative"], test["chosen_vs_weight_0"]["p_value"]
    cost = best["all_users_ndcg@10"] / base["all_users_ndcg@10"] - 1
    liked = (f"moves NDCG@10 on the liked targets from {base['rated_ge4_ndcg@10']:.4f} to "
             f"{best['rated_ge4_ndcg@10']:.4f} ({gain:+.1%}, p = {p:.2f})")
    liked += ": within noise" if p >= ALPHA else (": a real gain" if gain > 0 else ": a real loss")
    below = test["curve"][_key(test["curve"], chosen)]["below4_ndcg@10"]
    below_base = test["curve"][_key(test["curve"], 0.0)]["below4_ndcg@10"]["value"]
    all_p = test["curve"][_key(test["curve"], chosen)]["all_users_ndcg@10"]["p_vs_weight_0"]
    text = (f"At the chosen w = {chosen} the rating head {liked}. Over all users NDCG@10 moves {cost:+.1%} "
            f"({base['all_users_ndcg@10']:.4f} to {best['all_users_ndcg@10']:.4f}, p = {all_p:.2f}), over the "
            f"users who rated their target below 4 {below['value'] / below_base - 1:+.1%} "
            f"(p = {below['p_vs_weight_0']:.3f})")
    if below["p_vs_weight_0"] < ALPHA and below["value"] < below_base:
        text += ": the blend favours items rated well in general over the item this user takes next"
    larger = [row for w, row in test["curve"].items() if float(w) > chosen]
    if larger and all(r["rated_ge4_ndcg@10"]["value"] < base["rated_ge4_ndcg@10"]
                      and r["all_users_ndcg@10"]["value"] < base["all_users_ndcg@10"] for r in larger):
        text += ". Every larger weight scores below w = 0 on both the liked targets and all users"
    lines += ["", text + f". In hindsight the best test weight for the liked targets was "
                         f"{test['best_test_weight_in_hindsight']}."]
    if protocol.get("validation_caveat"):
        lines.append(f"Caveat: {protocol['validation_caveat']}.")
    return lines + [""]


def _key(curve: dict, weight: float) -> str:
    return next(k for k in curve if float(k) == weight)
