"""The report's per-scenario sections, rendered from what training/scenario_eval.py measured.

Reads every `<out_dir>/<dataset>_scenarios.json` (the harness writes them; nothing here measures).
"""

from __future__ import annotations

import json
from pathlib import Path

ROWS = ("lmrec-scenario", "lmrec-blind", "lmrec-single", "sasrec-merged", "sasrec-single")
LABELS = {
    "lmrec-scenario": "lmrec, one model, scenario-aware (served bundle)",
    "lmrec-blind": "lmrec, one model, scenario-blind, filtered to the scenario",
    "lmrec-single": "lmrec trained on this scenario only",
    "sasrec-merged": "SASRec on the merged sequence, filtered to the scenario",
    "sasrec-single": "SASRec trained on this scenario only",
}
TARGET_GAIN = 0.05


def scenario_sections(out_dir: Path) -> list[str]:
    lines: list[str] = []
    for path in sorted(Path(out_dir).glob("*_scenarios.json")):
        lines += _section(json.loads(path.read_text()))
    return lines


def _section(result: dict) -> list[str]:
    run, machine = result.get("run", {}), result.get("run", {}).get("machine", {})
    lines = [f"## {result['dataset']}: one user interest across scenarios", "",
             f"Run: `{run.get('command')}`, {run.get('seconds')} s wall, finished {run.get('finished')}; "
             f"machine: {machine.get('cpu')}, {machine.get('cores')} cores.", "",
             f"Protocol: {result.get('protocol', '')}", ""]
    met = []
    for scenario, entry in result["scenarios"].items():
        lines += [f"### Scenario `{scenario}` ({entry['users']} users)", "",
                  "| model | NDCG@10 (95% CI) | HR@10 | scenario-aware lmrec vs it | p |", "|---|---|---|---|---|"]
        for name in ROWS:
            row = entry["models"].get(name)
            if row is None:
                continue
            low, high = row["ndcg@10_ci"]
            versus = entry["lmrec-scenario_vs"].get(name)
            gain = "" if versus is None or versus["ndcg@10_rel_diff"] is None else f"{versus['ndcg@10_rel_diff']:+.1%}"
            p = "" if versus is None else f"{versus['p_value']:.4f}"
            lines.append(f"| {LABELS[name]} | {row['ndcg@10']:.4f} ({low:.4f}-{high:.4f}) | {row['hr@10']:.4f} "
                         f"| {gain} | {p} |")
            if versus is not None:
                met.append(versus["ndcg@10_rel_diff"] is not None and versus["ndcg@10_rel_diff"] >= TARGET_GAIN
                           and versus["p_value"] < 0.05)
        lines.append("")
    lines += [f"Target (scenario-aware lmrec ≥ {TARGET_GAIN:.0%} NDCG@10 over every other row in every scenario, "
              f"p < 0.05): **{'met' if met and all(met) else 'not met'}** "
              f"({sum(met)} of {len(met)} comparisons).", ""]
    parity = result.get("served_vs_torch") or {}
    if parity:
        lines += ["Served graphs vs PyTorch (scenario input included): " + "; ".join(
            f"`{s}` {p['users']} users, NDCG@10 {p['ndcg@10']['served']:.4f} vs {p['ndcg@10']['torch']:.4f}, "
            f"max score difference {p['max_abs_score_diff']:.1e}" for s, p in parity.items()) + ".", ""]
    epochs = result.get("epochs") or {}
    if epochs:
        lines += ["Epochs chosen on validation: " + ", ".join(f"{k} {v}" for k, v in epochs.items()) + ".", ""]
    return lines
