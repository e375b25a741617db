"""Renders results.json into docs/evaluation.md (markdown tables) and PNG plots, one set per dataset."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)

from training.conversation_report import conversation_section  # noqa: E402
from training.metrics import POPULARITY_BUCKETS  # noqa: E402
from training.multitask_report import multitask_section  # noqa: E402
from training.policy_report import policy_section  # noqa: E402
from training.scenario_report import scenario_sections  # noqa: E402

# The prose of the report (how the model works, the protocol, what was tried): edited there, not here.
NARRATIVE = Path(__file__).resolve().parent.parent / "docs" / "evaluation" / "narrative.md"
MAIN_METRICS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr@10")

_COLD_MISS = ("why, what a quota of slots costs, and what even a popularity oracle would reach: "
              "*The LM recommender*, items 3 and 4")


def _targets(result: dict) -> list[str]:
    """The issue's targets, computed from this run's numbers (never tuned on them)."""
    models, slices = result.get("models", {}), result.get("slices", {})
    if "lmrec" not in models:
        return []
    baselines = result.get("significance", {}).get("best_baseline")
    lines = ["### Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    lm = models["lmrec"]["ndcg@10"]
    if baselines in models:
        best = models[baselines]["ndcg@10"]
        lift = (lm - best) / best if best else 0.0
        p = (result.get("significance", {}).get("comparisons", {}).get("lmrec", {})
             .get("ndcg@10", {}).get("p_value"))
        # A lead inside the noise is reported as such, not as a win.
        noise = f"; not significant (p = {p:.2f})" if p is not None and p >= 0.05 else ""
        lines.append(f"| lmrec NDCG@10 ≥ best baseline ({baselines}), aiming +10% | {lm:.4f} vs {best:.4f} "
                     f"({lift:+.1%}) | {'met' if lm >= best else 'missed'}{' (+10% met)' if lift >= 0.10 else ''}"
                     f"{noise} |")
    warm = slices.get("cold_start:warm", {}).get("models", {}).get("lmrec", {}).get("hr@10")
    cold = slices.get("cold_start:cold", {}).get("models", {}).get("lmrec", {}).get("hr@10")
    if warm and cold is not None:
        lines.append(f"| cold-start HR@10 ≥ ½ warm HR@10 | cold {cold:.4f}, warm {warm:.4f} "
                     f"(ratio {cold / warm:.2f}) | "
                     f"{'met' if cold >= warm / 2 else f'missed at the default (no quota); {_COLD_MISS}'} |")
    if "lmrec-fp32" in models:
        fp32 = models["lmrec-fp32"]["ndcg@10"]
        rel = (lm - fp32) / fp32 if fp32 else 0.0
        lines.append(f"| INT8 within 1% relative NDCG@10 of FP32 (as served) | INT8 {lm:.4f}, FP32 {fp32:.4f} "
                     f"({rel:+.2%}) | {'met' if abs(rel) <= 0.01 else 'missed'} |")
    parity = result.get("tuning", {}).get("lmrec", {}).get("bundle", {}).get("ranking_parity", {})
    if "reencoded_int8_vs_fp32_ndcg_rel_diff" in parity:
        rel = parity["reencoded_int8_vs_fp32_ndcg_rel_diff"]
        lines.append("| items upserted after training, as served (encoded by the FP32 encoder under the INT8 "
                     "runtime, `item_precision=fp32`) | equal to FP32 by construction (tested) | met |")
        lines.append(f"| the same if every item text were re-encoded by the INT8 encoder "
                     f"(`item_precision=serving`; export parity, {parity['users']} validation users) | "
                     f"INT8 {parity['reencoded_int8_ndcg@10']:.4f}, FP32 {parity['reencoded_fp32_ndcg@10']:.4f} "
                     f"({rel:+.2%}) | "
                     f"{'within 1%' if abs(rel) <= 0.01 else 'outside 1%, hence not the default'} |")
    return lines + [""]



def _fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(row: dict, metric: str, digits: int = 4) -> str:
    """Value [CI]; "–" for a metric the row lacks (a row merged from a run before it existed)."""
    if row.get(metric) is None:
        return "–"
    lo, hi = row.get(metric + "_ci", (None, None))
    return f"{_fmt(row[metric], digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


def _p_value(significance: dict, name: str, metric: str) -> str:
    if name == significance.get("best_baseline"):
        return "best baseline"
    comparison = significance.get("comparisons", {}).get(name)
    if not comparison:
        return "–"
    test = comparison[metric]
    return f"{test['mean_diff']:+.4f} (p={test['p_value']:.4f})"


def _models_table(result: dict) -> list[str]:
    sig = result.get("significance", {})
    lines = ["| model | HR@10 [95% CI] | NDCG@10 [95% CI] | HR@20 | NDCG@20 | MRR@10 | coverage@10 | "
             "ΔNDCG@10 vs best baseline (p) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in result["models"].items():
        lines.append(f"| {name} | {_ci(row, 'hr@10')} | {_ci(row, 'ndcg@10')} | {_fmt(row['hr@20'])} | "
                     f"{_fmt(row['ndcg@20'])} | {_fmt(row['mrr@10'])} | {_fmt(row['coverage@10'], 3)} | "
                     f"{_p_value(sig, name, 'ndcg@10')} |")
    return lines


# What training/evaluate.py added beside coverage@10; results.json rows from before lack them.
BEYOND_ACCURACY_METRICS = ("ild@10", "ild_attr@10", "novelty@10", "gini@10")


def _beyond_accuracy_table(result: dict) -> list[str]:
    """ILD, novelty, coverage and exposure Gini per model; none when no row has them (older results)."""
    rows = result["models"]
    if not any(row.get(m) is not None for row in rows.values() for m in BEYOND_ACCURACY_METRICS):
        return []
    lines = ["| model | ILD@10 (LM) [95% CI] | ILD@10 (attributes) [95% CI] | novelty@10 (bits) [95% CI] | "
             "coverage@10 | Gini@10 |", "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {_ci(row, 'ild@10', 3)} | {_ci(row, 'ild_attr@10', 3)} | "
                     f"{_ci(row, 'novelty@10', 2)} | {_fmt(row.get('coverage@10'), 3)} | "
                     f"{_fmt(row.get('gini@10'), 3)} |")
    return ["### Beyond accuracy", "", *lines, "",
            "Definitions: Protocol, *Beyond accuracy*. \"–\": a row merged from a run that did not compute it.",
            ""]


def _slice_table(result: dict, groups: list[str], labels: list[str]) -> list[str]:
    slices = result["slices"]
    header = "| model | " + " | ".join(
        f"{label} NDCG@10 / HR@10 (n={slices[g]['n_users']})" for g, label in zip(groups, labels)) + " |"
    lines = [header, "|---|" + "---|" * len(groups)]
    for name in result["models"]:
        cells = []
        for g in groups:
            m = slices[g]["models"][name]
            cells.append(f"{_fmt(m['ndcg@10'])} / {_fmt(m['hr@10'])}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _groups(result: dict, kind: str) -> list[str]:
    """The slices of one kind ("activity", "gender", ...) in the order the evaluation wrote them."""
    return [g for g in result.get("slices", {}) if g.split(":", 1)[0] == kind]


def _user_sections(result: dict, activity_plot: str | None) -> list[str]:
    """Users by history length and, where the dataset describes its users, by each attribute sliced."""
    activity = _groups(result, "activity")
    if not activity:
        return []
    # Every other kind of slice the evaluation wrote is a user attribute (training/evaluate.py).
    attributes = list(dict.fromkeys(g.split(":", 1)[0] for g in result["slices"]
                                    if g.split(":", 1)[0] not in ITEM_AND_ACTIVITY_SLICES))
    lines = ["### By user: history length and demographics", "",
             "Users grouped by how many items their test-phase history holds (new users have short ones)"
             + (", and by the attributes the dataset gives them (ML-100K: `u.user`)." if attributes else "."), "",
             *_slice_table(result, activity, [g.split(":", 1)[1] + " items" for g in activity]), ""]
    if activity_plot:
        lines += [f"![NDCG@10 by history length]({activity_plot})", ""]
    for kind in attributes:
        groups = _groups(result, kind)
        label = ATTRIBUTE_LABELS.get(kind, kind)
        lines += [*_slice_table(result, groups, [f"{label} {g.split(':', 1)[1]}" for g in groups]), ""]
    return lines


def _tuning_table(result: dict) -> list[str]:
    lines = ["| model | grid size | best validation NDCG@10 | chosen parameters |", "|---|---|---|---|"]
    for name, t in result.get("tuning", {}).items():
        best_val = max(g["val_ndcg@10"] for g in t["grid"]) if t["grid"] else None
        params = ", ".join(f"{k}={v}" for k, v in t["best_params"].items()) or "(none)"
        lines.append(f"| {name} | {len(t['grid'])} | {_fmt(best_val)} | {params} |")
    return lines


def plot_metrics(result: dict, path: Path) -> None:
    names = list(result["models"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("ndcg@10", "hr@10")):
        values = [result["models"][n][metric] for n in names]
        lo = [v - result["models"][n][metric + "_ci"][0] for n, v in zip(names, values)]
        hi = [result["models"][n][metric + "_ci"][1] - v for n, v in zip(names, values)]
        ax.bar(names, values, yerr=[lo, hi], capsize=4, color="tab:blue")
        ax.set_title(f"{metric.upper()} (95% bootstrap CI)")
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _grouped_bars(result: dict, groups: list[str], labels: list[str], title: str, path: Path) -> None:
    names = list(result["models"])
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for i, name in enumerate(names):
        values = [result["slices"][g]["models"][name]["ndcg@10"] or 0.0 for g in groups]
        ax.bar([x + i * width for x in range(len(groups))], values, width, label=name)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(groups))])
    ax.set_xticklabels([f"{label}\n(n={result['slices'][g]['n_users']})" for g, label in zip(groups, labels)])
    ax.set_ylabel("NDCG@10")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(4, len(names)))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Slice kinds that are not user attributes; and shorter column labels for some attributes.
ITEM_AND_ACTIVITY_SLICES = ("popularity", "cold_start", "activity")
ATTRIBUTE_LABELS = {"age_group": "age"}

# The classical baselines `lmrec evaluate` runs by default (training/evaluate.py: DEFAULT_MODELS).
STANDARD_BASELINES = ("mostpop", "itemknn", "ease", "als", "bpr", "sasrec")


def _dataset_section(dataset: str, result: dict, out_dir: Path, report_dir: Path) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    pop_groups = [f"popularity:{b}" for b in POPULARITY_BUCKETS]
    cold_groups = ["cold_start:warm", "cold_start:cold"]
    plots = {
        "metrics": out_dir / f"{dataset}_metrics.png",
        "popularity": out_dir / f"{dataset}_popularity.png",
        "cold": out_dir / f"{dataset}_cold_warm.png",
    }
    activity_groups = _groups(result, "activity")
    if activity_groups:
        plots["activity"] = out_dir / f"{dataset}_activity.png"
        _grouped_bars(result, activity_groups, [g.split(":", 1)[1] + " items" for g in activity_groups],
                      "NDCG@10 by length of the user's history", plots["activity"])
    plot_metrics(result, plots["metrics"])
    _grouped_bars(result, pop_groups, list(POPULARITY_BUCKETS), "NDCG@10 by test-item popularity", plots["popularity"])
    _grouped_bars(result, cold_groups, ["warm items", "cold items"], "NDCG@10: warm vs cold-start test items",
                  plots["cold"])
    rel = {k: Path(os.path.relpath(p, report_dir)).as_posix() for k, p in plots.items()}
    run = result.get("run", {})
    machine = run.get("machine", {})
    proto = result.get("protocol", {})
    lines = [f"## {dataset}", ""]
    if run:
        lines += [
            f"Run: `{run.get('command', '')}`, seed {run.get('seed')}, {'QUICK grids, ' if run.get('quick') else ''}"
            f"{run.get('seconds')} s wall, finished {run.get('finished')}.",
            f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('memory_gib')} GiB RAM, "
            f"Python {machine.get('python')}, torch {machine.get('torch')} (CPU).",
            f"Data fingerprint: `{run.get('fingerprint', '')[:16]}…`.",
            *(["Merged with the figures of earlier runs on the same split: "
               + "; ".join(f"`{r.get('command', '')}` ({r.get('finished')})" for r in run["merged_runs"]) + "."]
              if run.get("merged_runs") else []),
            "",
        ]
    if proto.get("tie_break", "item_id") != "file":
        lines += ["**These figures were measured with same-timestamp interactions ordered by item id, a pattern "
                  "sequence models can exploit (docs/evaluation/narrative.md, item 0); they are not comparable "
                  "with the file-order datasets above until re-run.**", ""]
    lines += [
        f"{proto.get('n_users')} users, {proto.get('n_items')} items (all candidates), "
        f"{proto.get('n_cold_items')} cold items, {proto.get('n_train_interactions')} train interactions, "
        f"{proto.get('n_validation_users')} validation users, {proto.get('n_test_users')} test users of whom "
        f"{proto.get('n_cold_test_users')} have a cold test item. Dropped: "
        f"{proto.get('dropped_users_lt_min')} users with < 3 interactions, "
        f"{proto.get('dropped_repeat_interactions')} repeats, "
        f"{proto.get('dropped_unknown_item_interactions')} interactions on unknown items, "
        f"{proto.get('dropped_cold_train_interactions')} cold-item train interactions.",
        "",
        "### Test metrics",
        "",
        *_models_table(result),
        "",
        f"![metrics by model]({rel['metrics']})",
        "",
        *_beyond_accuracy_table(result),
    ]
    missing = [m for m in STANDARD_BASELINES if m not in result.get("models", {})]
    if missing and "lmrec" in result.get("models", {}):
        lines += [f"**Baselines not run on this dataset: {', '.join(missing)}.** \"Best baseline\" below is the "
                  "best of those that were, so a target met here is met against a partial field.", ""]
    lines += _targets(result)
    sig = result.get("significance", {})
    if sig:
        lines += [f"Significance: {sig['test']}, {sig['samples']} resamples, each model vs the best baseline "
                  f"(**{sig['best_baseline']}**) on per-user NDCG@10; HR@10 p-values are in results.json.", ""]
    lines += ["### By test-item popularity (long tail)", "",
              *_slice_table(result, pop_groups, list(POPULARITY_BUCKETS)), "",
              f"![NDCG@10 by popularity bucket]({rel['popularity']})", "",
              "### Cold-start items", "",
              *_slice_table(result, cold_groups, ["warm", "cold"]), "",
              f"![cold vs warm]({rel['cold']})", "",
              *_user_sections(result, rel.get("activity")),
              *policy_section(dataset, out_dir, report_dir),
              *conversation_section(dataset, out_dir),
              *multitask_section(dataset, out_dir),
              "### Tuning (validation NDCG@10)", "", *_tuning_table(result), ""]
    if result.get("skipped"):
        lines += ["Skipped: " + "; ".join(f"`{k}`: {v}" for k, v in result["skipped"].items()), ""]
    for hook, payload in result.get("extra", {}).items():
        lines += [f"### {hook}", "", "```", str(payload), "```", ""]
    return lines


def write_report(all_results: dict, out_dir: Path, report_path: Path) -> None:
    """Writes `report_path` (markdown) and the PNGs under `out_dir` for every dataset in `all_results`."""
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Offline evaluation", "",
             "<!-- generated by `lmrec evaluate` (training/report.py); do not edit by hand -->", "",
             "Tuned classical baselines and the LM recommender on the same leave-one-out split, ranked over the "
             "full catalogue. Raw numbers, tuning traces and p-values: "
             f"[{Path(os.path.relpath(Path(out_dir) / 'results.json', report_path.parent)).as_posix()}]"
             f"({Path(os.path.relpath(Path(out_dir) / 'results.json', report_path.parent)).as_posix()}).", ""]
    for dataset, result in all_results.items():
        lines += _dataset_section(dataset, result, Path(out_dir), report_path.parent)
    lines += scenario_sections(Path(out_dir))
    lines.append(NARRATIVE.read_text())
    report_path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Re-renders the report and plots from an existing results.json, without re-running models."""
    parser = argparse.ArgumentParser(prog="python -m training.report", description=main.__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/evaluation"), help="folder holding results.json")
    parser.add_argument("--report", type=Path, default=None, help="markdown to write (default: <out>.md)")
    args = parser.parse_args(argv)
    results = json.loads((args.out / "results.json").read_text())
    write_report(results, args.out, args.report or args.out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
