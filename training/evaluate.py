"""Offline evaluation harness: tune on validation, score test, slice, test significance, write the report.

`lmrec evaluate` calls `add_evaluate_arguments` and `run_evaluate`; other code can call
`evaluate_models` with any `Recommender` instances. Models are looked up by name in
training/registry.py.

Plug-in factories can read `--model-option KEY=VALUE` pairs from `args.model_options`. A remote model
(scores fetched over gRPC, `--target host:port`) is just another `Recommender`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lmrec_data.datasets import AGE_GROUPS, OLDEST_AGE_GROUP, load_dataset, resolve_data_path
from training import metrics
from training.beyond_accuracy import beyond_accuracy_metrics
from training.protocols import ModelEntry, Recommender
from training import registry
from training.split import Phase, SplitConfig, SplitData, build_split

DEFAULT_MODELS = "mostpop,itemknn,ease,als,bpr,sasrec,lmrec,lmrec-fp32"
DEFAULT_OUT = Path("docs/evaluation")
TUNING_METRIC = "ndcg@10"
SIGNIFICANCE_METRICS = ("ndcg@10", "hr@10")
TOP_K = 10
SCORE_BATCH = 512
# Users by the length of their test-phase history: (upper bound, label), the last one open-ended.
ACTIVITY_BUCKETS = ((50, "<=50"), (150, "51-150"), (None, ">150"))
# User attributes the report slices by, when the dataset has them (ML-100K's u.user; a generic users table).
USER_SLICE_ATTRIBUTES = ("gender", "age_group")

# Pre-trained LM item vectors per data fingerprint: a multi-model run (one process) encodes the texts once.
_ITEM_VECTORS: dict[str, np.ndarray] = {}


def score_phase(model: Recommender, data: SplitData, phase: Phase, users: np.ndarray,
                want_top: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Ranks of each user's `phase` target with history masked; optionally each user's top list."""
    history = data.history_matrix(phase)
    targets = data.targets(phase)
    ranks = np.empty(len(users), dtype=np.int64)
    tops = np.empty((len(users), want_top), dtype=np.int64) if want_top else None
    for start in range(0, len(users), SCORE_BATCH):
        batch = users[start:start + SCORE_BATCH]
        scores = np.array(model.score(batch), dtype=np.float32)
        if scores.shape != (len(batch), data.n_items):
            raise ValueError(f"{model.name}.score returned {scores.shape}, expected {(len(batch), data.n_items)}")
        metrics.mask_history(scores, history, batch)
        ranks[start:start + len(batch)] = metrics.target_ranks(scores, targets[batch])
        if want_top:
            tops[start:start + len(batch)] = metrics.top_k(scores, want_top)
    return ranks, tops


def tune(name: str, entry: ModelEntry, data: SplitData, args: argparse.Namespace) -> tuple[dict, list[dict]]:
    """Grid search on validation NDCG@10; returns the best params (with fitted extras) and the trace.

    An empty grid skips the validation phase (for a model tuned elsewhere) and returns ({}, []).
    """
    grid = entry.grid_from_args(args) if entry.grid_from_args else entry.grid(args.quick)
    if not grid:
        return {}, []
    fixed = (getattr(args, "params", None) or {}).get(name)
    grid = [fixed] if fixed is not None else sample_grid(grid, getattr(args, "max_configs", None), args.seed)
    users = data.eval_users("validation")
    trace, best, best_value = [], None, -1.0
    for params in tqdm(grid, desc=f"tune {name}", leave=False, disable=len(grid) < 2):
        started = time.perf_counter()
        model = entry.factory(args, **params)
        model.fit(data, "validation")
        ranks, _ = score_phase(model, data, "validation", users)
        value = float(metrics.per_user_metrics(ranks)[TUNING_METRIC].mean())
        full = {**params, **model.fitted_params()}
        seconds = round(time.perf_counter() - started, 2)
        trace.append({"params": full, f"val_{TUNING_METRIC}": value, "seconds": seconds})
        if value > best_value:
            best, best_value = full, value
    return best, trace


def sample_grid(grid: list[dict], max_configs: int | None, seed: int) -> list[dict]:
    """At most `max_configs` candidates, a seeded random draw in grid order: random search finds a
    near-best point of a grid at a fraction of its cost, for data where each fit costs minutes."""
    if not max_configs or len(grid) <= max_configs:
        return grid
    keep = np.sort(np.random.default_rng(seed).choice(len(grid), size=max_configs, replace=False))
    return [grid[i] for i in keep]


def pretrained_item_vectors(data: SplitData) -> np.ndarray:
    """Unit text embeddings of `data.item_texts` by the pre-trained (not fine-tuned) bundled MiniLM.

    One model-independent space for intra-list diversity, so every model's lists are measured alike;
    cached per data fingerprint for the process.

    Raises:
        RuntimeError: the LM cannot be loaded (pass `item_vectors` to `evaluate_models` instead).
    """
    if data.fingerprint not in _ITEM_VECTORS:
        try:
            from training.export_encoder import load_pooled_encoder
            from training.lm_finetune import embed_texts
            from training.lm_config import LMRecConfig

            pooled, tokenizer, _ = load_pooled_encoder(None)
        except (ImportError, OSError) as exc:
            raise RuntimeError("ild@10 needs the pre-trained LM's item vectors and it could not be loaded; "
                               "install the training extra or pass item_vectors") from exc
        # Item texts encoded as the LM recommender encodes them, by the pre-trained LM.
        _ITEM_VECTORS[data.fingerprint] = embed_texts(pooled, tokenizer, data.item_texts, LMRecConfig().max_length)
    return _ITEM_VECTORS[data.fingerprint]


def evaluate_models(data: SplitData, models: dict[str, Recommender], seed: int = 0,
                    baselines: set[str] | None = None, fitted: bool = False,
                    item_vectors: np.ndarray | None = None) -> dict:
    """Fits (unless `fitted`) each model for the test phase and computes everything results.json holds.

    Args:
        data: the split.
        models: name -> model, already built with its chosen params.
        seed: seeds bootstrap and permutation resampling.
        baselines: names eligible as "best baseline" for significance (default: every model).
        fitted: the models were already fitted with phase "test".
        item_vectors: float [n_items, dim] vectors for ild@10; default `pretrained_item_vectors(data)`.

    Returns:
        {"models", "per_user", "slices", "significance", "protocol"} for one dataset; "per_user" holds
        numpy arrays and is dropped before writing JSON.

    Raises:
        RuntimeError: no `item_vectors` given and the pre-trained LM cannot be loaded.
    """
    users = np.arange(data.n_users)
    if models and item_vectors is None:
        item_vectors = pretrained_item_vectors(data)
    # Novelty's p(i): the share of users whose test-phase history (what the models saw) holds item i.
    item_user_counts = data.item_popularity("test")
    out_models, per_user = {}, {}
    for name, model in tqdm(models.items(), desc="test", leave=False):
        started = time.perf_counter()
        if not fitted:
            model.fit(data, "test")
        ranks, tops = score_phase(model, data, "test", users, want_top=TOP_K)
        values = metrics.per_user_metrics(ranks)
        row: dict[str, Any] = {}
        for metric in metrics.METRICS:
            row[metric] = float(values[metric].mean())
            row[metric + "_ci"] = list(metrics.bootstrap_ci(values[metric], seed=seed))
        beyond, beyond_per_user = beyond_accuracy_metrics(tops, item_vectors, data.item_attributes,
                                                          item_user_counts, data.n_users)
        row.update(beyond)
        for metric, per_user_values in beyond_per_user.items():
            row[metric + "_ci"] = list(metrics.bootstrap_ci(per_user_values, seed=seed))
        per_user[name] = {**values, **beyond_per_user}
        row["test_seconds"] = round(time.perf_counter() - started, 2)
        out_models[name] = row
    return {
        "models": out_models,
        "per_user": per_user,
        "slices": compute_slices(data, per_user),
        "significance": compute_significance(out_models, per_user, baselines or set(models), seed),
        "protocol": data.protocol(),
    }


def popularity_buckets(data: SplitData) -> np.ndarray:
    """Per user, the bucket of the test item by test-phase history popularity; "cold" for cold items.

    Warm items are sorted by popularity and cut where the cumulative interaction count crosses 1/3 and
    2/3, so head, torso and tail each hold a third of the history interactions (head: few blockbusters,
    tail: the many rarely seen items, including warm items never seen in training).
    """
    pop = data.item_popularity("test").astype(np.float64)
    warm = ~data.cold_items
    order = np.argsort(-pop[warm], kind="stable")
    warm_idx = np.flatnonzero(warm)[order]
    share = np.cumsum(pop[warm_idx]) / max(pop[warm_idx].sum(), 1.0)
    item_bucket = np.full(data.n_items, "cold", dtype=object)
    head, torso, tail = metrics.POPULARITY_BUCKETS
    item_bucket[warm_idx] = np.where(share <= 1 / 3, head, np.where(share <= 2 / 3, torso, tail))
    return item_bucket[data.test_items]


def user_groups(data: SplitData) -> dict[str, np.ndarray]:
    """Masks over users: "activity:<bucket>" by test-phase history length, and "<attribute>:<value>" for
    each USER_SLICE_ATTRIBUTES value the dataset gives (users without the attribute are in none)."""
    lengths = np.array([len(h) for h in data.history_sequences("test")])
    groups, lower = {}, 0
    for upper, label in ACTIVITY_BUCKETS:
        groups[f"activity:{label}"] = (lengths > lower) & (lengths <= upper if upper is not None else True)
        lower = upper
    for attribute in USER_SLICE_ATTRIBUTES:
        values = [(attrs.get(attribute) or [None])[0] for attrs in data.user_attributes]
        for value in sorted({v for v in values if v is not None}, key=_slice_value_order):
            groups[f"{attribute}:{value}"] = np.array([v == value for v in values])
    return groups


def _slice_value_order(value: str) -> tuple:
    """Age bands youngest first; any other values alphabetically."""
    bands = [label for _, label in AGE_GROUPS] + [OLDEST_AGE_GROUP]
    return (bands.index(value) if value in bands else len(bands), value)


def compute_slices(data: SplitData, per_user: dict[str, dict[str, np.ndarray]]) -> dict:
    buckets = popularity_buckets(data)
    cold_users = data.cold_items[data.test_items]
    groups = {f"popularity:{b}": buckets == b for b in metrics.POPULARITY_BUCKETS}
    groups["cold_start:cold"] = cold_users
    groups["cold_start:warm"] = ~cold_users
    groups.update(user_groups(data))
    item_counts = {b: int(len(np.unique(data.test_items[buckets == b]))) for b in (*metrics.POPULARITY_BUCKETS, "cold")}
    slices = {}
    for group, mask in groups.items():
        entry = {"n_users": int(mask.sum()), "models": {}}
        kind = group.split(":")[1]
        if kind in item_counts:
            entry["n_distinct_test_items"] = item_counts[kind]
        for name, values in per_user.items():
            entry["models"][name] = {m: (float(values[m][mask].mean()) if mask.any() else None)
                                     for m in ("hr@10", "ndcg@10")}
        slices[group] = entry
    return slices


def compute_significance(model_rows: dict, per_user: dict, baselines: set[str], seed: int) -> dict:
    """Each model vs the best baseline on test NDCG@10: paired sign-flip permutation test per metric."""
    eligible = [n for n in model_rows if n in baselines]
    if not eligible:
        return {}
    best = max(eligible, key=lambda n: model_rows[n]["ndcg@10"])
    result = {"best_baseline": best, "test": "two-sided paired sign-flip permutation test over users",
              "samples": metrics.PERMUTATION_SAMPLES, "comparisons": {}}
    for name in model_rows:
        if name == best:
            continue
        result["comparisons"][name] = {
            m: metrics.paired_permutation_test(per_user[name][m], per_user[best][m], seed=seed)
            for m in SIGNIFICANCE_METRICS
        }
    return result


def machine_description() -> dict:
    cpu = platform.processor() or platform.machine()
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    for line in lscpu.splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    with open("/proc/meminfo", encoding="ascii") as f:
        mem_kib = int(f.readline().split()[1])
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--data", default=None,
                        help="dataset directory (default: $LMREC_DATA, else ../shared/data/ml-100k)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder for results.json and the plots (default: docs/evaluation)")
    parser.add_argument("--report", type=Path, default=None,
                        help="markdown report to write (default: <out>.md, i.e. docs/evaluation.md)")
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help=f"comma-separated models (default: {DEFAULT_MODELS}); unavailable plug-ins are skipped")
    parser.add_argument("--quick", action="store_true", help="tiny grids and epochs, for CI smoke runs")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, models and resampling")
    parser.add_argument("--max-configs", type=int, default=None, metavar="N",
                        help="tune each model on at most N candidates of its grid, a seeded random draw "
                             "(default: the whole grid)")
    parser.add_argument("--params", action="append", default=[], metavar="MODEL=JSON",
                        help="fit MODEL with these hyperparameters only (its validation score is still "
                             "recorded), e.g. to refit a configuration an earlier run's tuning chose")
    parser.add_argument("--cold-fraction", type=float, default=0.1, help="share of items held out as cold")
    parser.add_argument("--tie-break", choices=["file", "item_id"], default="file",
                        help="order of same-timestamp interactions: the data file's (default) or by item id "
                             "(the old rule, to measure its effect)")
    parser.add_argument("--target", default=None, metavar="HOST:PORT",
                        help="a running gateway to evaluate through its public API as model 'served' "
                             "(add 'served' to --models; its catalogue must hold the dataset's items)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the models of the earlier run on this dataset (same split) that this run "
                             "does not evaluate; slices and significance are recomputed over all of them")
    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                        help="free option for plug-in model factories (repeatable), e.g. checkpoint=runs/lm; "
                             "factories read args.model_options")
    from training.ope import add_ope_arguments

    add_ope_arguments(parser.add_argument_group("off-policy evaluation (--ope LOG: no models are evaluated)"))
    return parser


def parse_model_options(pairs: list[str]) -> dict[str, str]:
    """KEY=VALUE strings -> dict; raises ValueError naming the malformed one."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-option expects KEY=VALUE, got {pair!r}")
        options[key] = value
    return options


def _command_line(args: argparse.Namespace) -> str:
    parts = ["lmrec evaluate", f"--models {args.models}", f"--seed {args.seed}"]
    if args.data:
        parts.append(f"--data {args.data}")
    if args.cold_fraction != 0.1:
        parts.append(f"--cold-fraction {args.cold_fraction}")
    if args.quick:
        parts.append("--quick")
    if getattr(args, "max_configs", None):
        parts.append(f"--max-configs {args.max_configs}")
    parts += [f"--params '{name}={json.dumps(p, sort_keys=True)}'" for name, p in (getattr(args, "params", {}) or {}).items()]
    if getattr(args, "tie_break", "file") != "file":
        parts.append(f"--tie-break {args.tie_break}")
    if getattr(args, "merge", False):
        parts.append("--merge")
    if getattr(args, "target", None):
        parts.append(f"--target {args.target}")
    parts += [f"--model-option {k}={v}" for k, v in (getattr(args, "model_options", {}) or {}).items()]
    return " ".join(parts)


def _bundle_record(bundle_dir: Path) -> dict:
    """Which bundle a row was scored with, and the precision parity its export recorded."""
    from lmrec.bundle import load_manifest

    manifest = load_manifest(bundle_dir)
    return {"model_version": manifest.model_version, "ranking_parity": manifest.parity.get("ranking", {})}


def _merge_earlier_run(result: dict, tuning: dict, results_path: Path, per_user_path: Path, data: SplitData,
                       baselines: set[str], seed: int, command: str) -> tuple[dict, list[dict]]:
    """Adds the models of the earlier run on this dataset that this run did not evaluate, keeping the
    earlier run's model order; returns the merged tuning and the runs merged so far (oldest first).

    Only a run on the same data fingerprint and split qualifies (else ValueError); slices and significance
    are recomputed over the union from the saved per-user metrics, so they compare like with like.
    """
    earlier = json.loads(results_path.read_text()).get(data.dataset_name) if results_path.is_file() else None
    if earlier is None or not per_user_path.is_file():
        # Nothing to merge with: this run's figures stand alone (failing here would lose them all).
        print(f"--merge: no earlier run on {data.dataset_name} in {results_path.parent}; nothing merged",
              file=sys.stderr)
        return tuning, []
    if earlier["run"]["fingerprint"] != data.fingerprint or earlier["protocol"]["seed"] != data.config.seed:
        raise ValueError("--merge: the earlier run used other data or another split")
    saved = np.load(per_user_path)
    for name, row in earlier["models"].items():
        if name in result["models"]:
            continue
        result["models"][name] = row
        result["per_user"][name] = {k.split("|", 1)[1]: saved[k] for k in saved.files if k.split("|", 1)[0] == name}
        tuning = {**tuning, name: earlier["tuning"].get(name, {})}
        if name in registry.MODEL_FACTORIES and registry.MODEL_FACTORIES[name].baseline:
            baselines = baselines | {name}
    order = [*earlier["models"], *(n for n in result["models"] if n not in earlier["models"])]
    result["models"] = {n: result["models"][n] for n in order}
    tuning = {n: tuning[n] for n in order if n in tuning}
    result["slices"] = compute_slices(data, result["per_user"])
    result["significance"] = compute_significance(result["models"], result["per_user"], baselines, seed)
    before = earlier.get("run", {})
    runs = [*before.get("merged_runs", []),
            {k: before[k] for k in ("command", "seconds", "finished") if k in before}]
    # The same command again re-evaluated the same models, so its earlier runs no longer contribute a
    # figure: keep them out of the provenance, or re-scoring a bundle again and again lists every one.
    last = {r.get("command"): n for n, r in enumerate(runs)}
    return tuning, [r for n, r in enumerate(runs) if r.get("command") != command and last[r.get("command")] == n]


def run_evaluate(args: argparse.Namespace) -> int:
    """Runs the whole evaluation and writes results.json, the PNGs and the markdown report; with --ope,
    estimates a policy's click rate from an impression log instead."""
    from training.report import write_report

    if args.ope:
        from training.ope import main_ope

        return main_ope(args)
    args.model_options = parse_model_options(getattr(args, "model_option", []))
    args.params = {name: json.loads(value) for name, _, value in
                   (pair.partition("=") for pair in getattr(args, "params", []) or [])}
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    entries, skipped = registry.resolve_models(names)
    for name, reason in skipped.items():
        print(f"skipping model {name!r}: {reason}", file=sys.stderr)
    if not entries:
        print("no model to evaluate", file=sys.stderr)
        return 2
    started = time.perf_counter()
    dataset = load_dataset(resolve_data_path(args.data))
    data = build_split(dataset, SplitConfig(cold_fraction=args.cold_fraction, seed=args.seed,
                                            tie_break=args.tie_break))
    print(f"{data.dataset_name}: {data.n_users} users, {data.n_items} items, "
          f"{data.stats['n_cold_test_users']} cold-item test users", file=sys.stderr)

    tuning, models = {}, {}
    for name, entry in entries.items():
        best, trace = tune(name, entry, data, args)
        tuning[name] = {"best_params": best, "grid": trace}
        if trace:
            print(f"{name}: best {best} (val {TUNING_METRIC} "
                  f"{max(t[f'val_{TUNING_METRIC}'] for t in trace):.4f})", file=sys.stderr)
        models[name] = entry.factory(args, **best)
    baselines = {n for n, e in entries.items() if e.baseline}
    result = evaluate_models(data, models, seed=args.seed, baselines=baselines)
    for name, model in models.items():
        if getattr(model, "bundle_dir", None) is not None:
            tuning[name]["bundle"] = _bundle_record(Path(model.bundle_dir))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    per_user_path = out / f"{data.dataset_name}_per_user.npz"
    merged_runs: list[dict] = []
    if args.merge:
        tuning, merged_runs = _merge_earlier_run(result, tuning, out / "results.json", per_user_path, data,
                                                 baselines, args.seed, _command_line(args))
    np.savez_compressed(per_user_path, **{f"{m}|{k}": v for m, metrics_ in result["per_user"].items()
                                          for k, v in metrics_.items()})
    result.pop("per_user")
    result["tuning"] = tuning
    result["skipped"] = skipped
    result["run"] = {
        "command": _command_line(args),
        "quick": bool(args.quick),
        "seed": args.seed,
        "fingerprint": data.fingerprint,
        "seconds": round(time.perf_counter() - started, 1),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(),
    }
    if merged_runs:
        result["run"]["merged_runs"] = merged_runs

    results_path = out / "results.json"
    # One results.json holds every dataset evaluated; a run replaces only its own dataset's entry.
    all_results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    all_results[data.dataset_name] = result
    results_path.write_text(json.dumps(all_results, indent=2, sort_keys=False) + "\n")
    report = Path(args.report) if args.report else out.with_suffix(".md")
    write_report(all_results, out, report)
    print(f"wrote {results_path} and {report} in {result['run']['seconds']} s", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_evaluate_arguments(argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__))
    return run_evaluate(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
