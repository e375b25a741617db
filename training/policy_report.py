"""The report's policy-stage section, rendered from what bench/policy_eval.py measured.

Reads `<out_dir>/<dataset>_policy.json` when it exists (the bench writes it; nothing here measures), so
the figures in docs/evaluation.md are always the last measured ones.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def policy_section(dataset: str, out_dir: Path, report_dir: Path) -> list[str]:
    path = Path(out_dir) / f"{dataset}_policy.json"
    if not path.is_file():
        return []
    result = json.loads(path.read_text())
    lines = ["### Policy stage (feedback, reasons, diversity, exploration)", "",
             f"`python bench/policy_eval.py --bundle ...` on the evaluation bundle `{result.get('bundle')}`, test "
             f"phase of the same split, through the ranking tier's ranker and the gateway's policy functions "
             f"(machine: {result.get('machine')}).", ""]
    lines += _negatives(result.get("negatives"))
    lines += _blend(result.get("blend"))
    lines += _faithfulness(result.get("faithfulness"))
    lines += _diversity(result.get("diversity"), dataset, out_dir, report_dir)
    lines += _exploration(result.get("exploration"))
    return lines


def _negatives(block: dict | None) -> list[str]:
    if not block:
        return []
    lines = [f"**Feedback semantics.** {block['users']} users whose test item they rated >= 4; "
             f"{block['rule']}.", "", "| context | NDCG@10 | vs all positive | p |", "|---|---|---|---|"]
    for name, row in block["rows"].items():
        p = "" if row["p_vs_all_positive"] is None else f"{row['p_vs_all_positive']:.3f}"
        lines.append(f"| {name} | {row['ndcg@10']:.4f} | {row['relative']:+.1%} | {p} |")
    return lines + [""]


def _blend(block: dict | None) -> list[str]:
    if not block:
        return []
    cells = ", ".join(f"{b}: {v:.4f}" for b, v in block["ndcg@10_by_blend"].items())
    return [f"**Event-weight blend** (share of the trained ranker's user vector from the event-weighted mean "
            f"of its history; every event weighs the same here): NDCG@10 by blend {cells}.", ""]


def _faithfulness(block: dict | None) -> list[str]:
    if not block:
        return []
    return [f"**Faithfulness of HISTORY_ITEM reasons** over {block['pairs']} (user, item) pairs of every test "
            f"user's top 10: removing the cited item from the history and re-scoring lowers the item's score "
            f"more than removing a random context item for **{block['cited_falls_more_than_random']:.1%}** "
            f"(target >= 80%; the random draw: {block['random_draw']}); the cited item is the single most "
            f"influential one (leave-one-out over every item the model reads) for "
            f"**{block['cited_is_single_most_influential']:.1%}**"
            + (f", though the attribution tries only the last {block['explain_window']} of the "
               f"{block['context_window']} (`explain_window`). " if 'explain_window' in block else ". ")
            + (f"It cites the user's most recent item for {block['cites_the_most_recent_item']:.1%}: the "
               f"sequence model leans on it. " if 'cites_the_most_recent_item' in block else "")
            + f"The largest gap between the served attribution and the re-scored drop is "
            f"{block['max_abs_gap_attribution_vs_rescored']:.2g}. For comparison, the history item most "
            f"similar by text is the most influential one for only "
            f"{block['most_similar_history_item_is_most_influential']:.1%}.", ""]


def _diversity(block: dict | None, dataset: str, out_dir: Path, report_dir: Path) -> list[str]:
    if not block:
        return []
    png = Path(out_dir) / f"{dataset}_diversity.png"
    lines = ["**Diversity** (MMR over the best max(5k, 50) candidates; " + block["ild_space"] + "):", "",
             "| λ | NDCG@10 | change | ILD@10 | change | ILD@10 (served vectors) | ILD@10 (attributes) |",
             "|---|---|---|---|---|---|---|"]
    for lam, row in block["rows"].items():
        lines.append(f"| {lam} | {row['ndcg@10']:.4f} | {row['ndcg_change']:+.1%} | {row['ild@10']:.4f} | "
                     f"{row['ild_change']:+.1%} | {row['ild_served_vectors@10']:.4f} | {row['ild_attr@10']:.4f} |")
    best = block["recommended_lambda"]
    lines += ["", f"Recommended λ = {best} (the most diverse within 3% of λ = 0's NDCG@10); target "
                  f"({block['target']}): **{'met' if block['target_met'] else 'missed'}**."]
    random = block.get("random_lists")
    if random:
        lines += [f"For scale: lists of 10 catalogue items drawn at random have ILD@10 {random['ild@10']:.4f} "
                  f"({random['ild_change']:+.1%} over λ = 0) and attribute ILD@10 {random['ild_attr@10']:.4f} "
                  f"({random['ild_attr_change']:+.1%}): a +20% list would have to be more spread out than "
                  f"random ones."]
    lines += [""]
    if png.is_file():
        lines += [f"![NDCG@10 vs ILD@10]({Path(os.path.relpath(png, report_dir)).as_posix()})", ""]
    return lines


def _exploration(block: dict | None) -> list[str]:
    if not block:
        return []
    truth = block["greedy_on_policy"]
    lines = [f"**Off-policy evaluation.** {block['simulation']}. Logged (ε-greedy) click rate "
             f"{block['logged_click_rate']:.5f}; the greedy policy's own click rate on the same users "
             f"{truth['estimate']:.5f} (95% CI {truth['ci95'][0]:.5f}–{truth['ci95'][1]:.5f}). Estimates of "
             f"the greedy policy from the ε-greedy log (bootstrap over users):", "",
             "| estimator | estimate | 95% CI | greedy's click rate inside |", "|---|---|---|---|"]
    for name, est in block["ope"]["estimators"].items():
        lo, hi = est["ci95"]
        lines.append(f"| {name.upper()} | {est['estimate']:.5f} | {lo:.5f}–{hi:.5f} | "
                     f"{'yes' if block['truth_inside_ci'][name] else 'no'} |")
    return lines + ["", f"Effective sample size of the weights: {block['ope']['ess']:.0f} of "
                        f"{block['ope']['n_impressions']} impressions.", ""]
