"""Per-scenario evaluation on data whose interactions name a scenario (e.g. amazon-art-office's domains).

Protocol (the cross-domain sequential recommendation papers', over each domain's full catalogue): a
user's last interaction in scenario s is s's test target, the one before it s's validation target; the
target is ranked among s's items with the user's history masked. Users are evaluated in s when they
have at least 3 interactions there, so the single-scenario models have a history too.

Models, each fitted once on validation (early stopping) and once on test histories (that many epochs):
  * lmrec-scenario: one user tower over the merged sequence, read per scenario (ScenarioGate), scored
    through the exported bundle as served, with the request's scenario;
  * lmrec-blind: the same model trained without scenarios, scores filtered to s;
  * lmrec-single: lmrec trained on scenario s's interactions and items only;
  * sasrec-single, sasrec-merged: SASRec on s alone / on the merged sequence filtered to s.
Every lmrec variant reads the same item text vectors (`--finetune-steps`, default 0: the pre-trained
LM), so the rows differ only in how scenarios are used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from lmrec_data.datasets import Dataset, load_dataset, resolve_data_path
from training import metrics
from training.split import MIN_INTERACTIONS, NO_ITEM, SplitConfig, SplitData, build_split

DEFAULT_OUT = Path("docs/evaluation")
PARITY_USERS = 300


@dataclass
class ScenarioViews:
    """The merged split in its two fits' shapes, and per scenario its test targets and users.

    validation: histories without any scenario's validation or test target; its validation item is the
        later of the user's validation targets (early stopping only).
    test: histories without the test targets (train_sequences, no validation item); test_items unused.
    targets[s]: per user, s's test item (NO_ITEM without one); users[s]: users evaluated in s.
    """

    validation: SplitData
    test: SplitData
    targets: dict[str, np.ndarray]
    users: dict[str, np.ndarray]


def scenario_views(dataset: Dataset, tie_break: str = "file") -> ScenarioViews:
    merged = build_split(dataset, SplitConfig(cold_fraction=0.0, tie_break=tie_break))
    scenario_of = np.array(merged.item_scenarios)
    names = merged.scenario_names
    if not names:
        raise ValueError(f"dataset {dataset.name!r}: no interaction names a scenario")
    full = [np.concatenate([seq, [v, t]]).astype(np.int64)
            for seq, v, t in zip(merged.train_sequences, merged.val_items, merged.test_items)]
    val_hist, test_hist, later_val = [], [], []
    targets = {s: np.full(merged.n_users, NO_ITEM, dtype=np.int64) for s in names}
    counts = {s: np.zeros(merged.n_users, dtype=np.int64) for s in names}
    for u, seq in enumerate(full):
        drop_test, drop_val, last_val = set(), set(), (-1, NO_ITEM)
        for s in names:
            positions = np.flatnonzero(scenario_of[seq] == s)
            counts[s][u] = len(positions)
            if len(positions):
                drop_test.add(int(positions[-1]))
                targets[s][u] = seq[positions[-1]]
            if len(positions) >= 2:
                drop_val.add(int(positions[-2]))
                last_val = max(last_val, (int(positions[-2]), int(seq[positions[-2]])))
        keep = np.ones(len(seq), dtype=bool)
        keep[list(drop_test)] = False
        test_hist.append(seq[keep])
        keep[list(drop_val)] = False
        val_hist.append(seq[keep])
        later_val.append(last_val[1])
    no_times = [np.zeros(len(h), dtype=np.int64) for h in val_hist]
    validation = replace(merged, fingerprint=f"{merged.fingerprint}:scenario-validation", train_sequences=val_hist,
                         train_timestamps=no_times, val_items=np.array(later_val, dtype=np.int64))
    test = replace(merged, fingerprint=f"{merged.fingerprint}:scenario-test", train_sequences=test_hist,
                   train_timestamps=[np.zeros(len(h), dtype=np.int64) for h in test_hist],
                   val_items=np.full(merged.n_users, NO_ITEM, dtype=np.int64))
    users = {s: np.flatnonzero(counts[s] >= MIN_INTERACTIONS) for s in names}
    return ScenarioViews(validation, test, targets, users)


def single_scenario_dataset(dataset: Dataset, merged: SplitData, scenario: str) -> Dataset:
    """The scenario's own interactions and every item of its catalogue (by the items' scenario)."""
    items_in = {i for i, s in zip(merged.item_ids, merged.item_scenarios) if s == scenario}
    return Dataset(f"{dataset.name}-{scenario}", [it for it in dataset.items if it.item_id in items_in],
                   [x for x in dataset.interactions if x.scenario == scenario])


def sample_users(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """A seeded share of the users with all their interactions, and the whole catalogue (every item stays
    a candidate): the full protocol at a fraction of the training cost."""
    if fraction >= 1.0:
        return dataset
    users = sorted({x.user_id for x in dataset.interactions})
    keep = set(np.random.default_rng(seed).choice(users, size=max(1, round(fraction * len(users))), replace=False))
    return Dataset(f"{dataset.name}", dataset.items, [x for x in dataset.interactions if x.user_id in keep],
                   {u: a for u, a in dataset.users.items() if u in keep})


def _cached_text(data: SplitData, config, cache: Path | None):
    """The (fine-tuned) LM and its item text vectors; with `cache`, the vectors are kept on disk per
    catalogue and LM setting, so a rerun skips encoding tens of thousands of texts."""
    from training.lm_recommender import FineTunedLM, fine_tuned_lm

    if cache is None or config.finetune.steps:
        return fine_tuned_lm(data, config)
    import hashlib

    from training.export_encoder import load_pooled_encoder

    key = hashlib.sha256("\x1e".join([config.model or "", str(config.max_length), *data.item_texts]).encode()).hexdigest()
    path = Path(cache) / f"text-{key[:16]}.npy"
    if not path.is_file():
        lm = fine_tuned_lm(data, config)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, lm.text)
        return lm
    pooled, tokenizer, source = load_pooled_encoder(config.model)
    return FineTunedLM(pooled, tokenizer, source, np.load(path), {"steps": 0, "text_cache": str(path)})


def domain_ranks(scores: np.ndarray, history: SplitData, users: np.ndarray, targets: np.ndarray,
                 in_scenario: np.ndarray) -> np.ndarray:
    """Ranks of `targets` among the scenario's items (`in_scenario` mask), the test history masked."""
    scores = np.array(scores, dtype=np.float32)
    scores[:, ~in_scenario] = -np.inf
    metrics.mask_history(scores, history.history_matrix("test"), users)
    return metrics.target_ranks(scores, targets)


def _served_vs_torch(model, data: SplitData, users: np.ndarray, scenario_ids: np.ndarray,
                     targets: np.ndarray, in_scenario: np.ndarray) -> dict:
    """The bundle's graphs as the ranking worker runs them (scenario input included, no serving-time
    blend) against the PyTorch net, on the same users and scenario."""
    from training.lm_scores import BundleScorer, torch_scores

    history = data.history_sequences("test")
    reference = torch_scores(model.trained, [history[u] for u in users], scenario_ids)
    served = BundleScorer(model.bundle_dir, model.precision, data, "test", graphs_only=True).score(users, scenario_ids)
    ndcg = {name: float(metrics.per_user_metrics(domain_ranks(s, data, users, targets, in_scenario))["ndcg@10"].mean())
            for name, s in (("served", served), ("torch", reference))}
    return {"users": int(len(users)), "ndcg@10": ndcg,
            "max_abs_score_diff": float(np.abs(served[:, in_scenario] - reference[:, in_scenario]).max())}


def _scored(score_fn, users: np.ndarray, batch: int = 512) -> np.ndarray:
    return np.concatenate([score_fn(users[i:i + batch]) for i in range(0, len(users), batch)])


def run(args: argparse.Namespace) -> dict:
    import torch

    from training.baselines.sasrec import SASRec
    from training.lm_config import LMRecConfig
    from training.lm_recommender import FineTunedLM, LMRecommender

    torch.set_num_threads(1)
    started = time.perf_counter()
    dataset = sample_users(load_dataset(resolve_data_path(args.data)), args.users_fraction, args.seed)
    views = scenario_views(dataset, args.tie_break)
    merged = views.test
    names = merged.scenario_names
    scenario_ids = merged.item_scenario_ids()
    config = LMRecConfig.from_options(args.quick, args.seed, finetune_steps=args.finetune_steps)
    # Export parity re-encodes the whole catalogue per precision; here the served rows are checked against
    # PyTorch directly (served_vs_torch), on a sample.
    config = replace(config, max_epochs=args.max_epochs or config.max_epochs, parity_precisions=())
    sasrec_params = {"max_epochs": args.max_epochs or 100, "seed": args.seed}
    if args.quick:
        sasrec_params.update(hidden=16, layers=1, max_len=20, max_epochs=2, eval_every=1, weight_average=0.0)
    lm = _cached_text(merged, config, args.text_cache)  # one set of item text vectors for every lmrec row
    seconds: dict[str, float] = {"lm": round(time.perf_counter() - started, 1)}
    per_user: dict[str, dict[str, dict[str, np.ndarray]]] = {s: {} for s in names}
    epochs: dict[str, int | None] = {}
    served_vs_torch: dict[str, dict] = {}

    def record(name: str, scenario: str, ranks: np.ndarray) -> None:
        per_user[scenario][name] = metrics.per_user_metrics(ranks)

    def fit_two(make, validation: SplitData, test: SplitData, name: str):
        t0 = time.perf_counter()
        first = make(None, None)
        first.fit(validation, "validation")
        fitted = first.fitted_params()
        epochs[name] = fitted.get("fixed_epochs")
        model = make(fitted.get("fixed_epochs"), fitted.get("cold_bias"))
        model.fit(test, "test")
        seconds[name] = round(time.perf_counter() - t0, 1)
        return model

    def lmrec(cfg):
        return lambda e, bias: LMRecommender(cfg, "int8", fixed_epochs=e, cold_bias=bias, lm=lm)

    def sasrec(e, _bias):
        return SASRec(**sasrec_params, fixed_epochs=e)

    merged_models = {
        "lmrec-scenario": fit_two(lmrec(config), views.validation, merged, "lmrec-scenario"),
        "lmrec-blind": fit_two(lmrec(replace(config, scenarios=False)), views.validation, merged, "lmrec-blind"),
        "sasrec-merged": fit_two(sasrec, views.validation, merged, "sasrec-merged"),
    }
    for s in names:
        users, targets = views.users[s], views.targets[s][views.users[s]]
        in_s = scenario_ids == names.index(s) + 1
        for name, model in merged_models.items():
            if name == "lmrec-scenario":
                ids = np.full(len(users), names.index(s) + 1)
                scores = np.concatenate([model.score(users[i:i + 512], ids[i:i + 512])
                                         for i in range(0, len(users), 512)])
            else:
                scores = _scored(model.score, users)
            record(name, s, domain_ranks(scores, merged, users, targets, in_s))
            if name == "lmrec-scenario":
                served_vs_torch[s] = _served_vs_torch(model, merged, users[:PARITY_USERS], ids[:PARITY_USERS],
                                                      targets[:PARITY_USERS], in_s)
        single = build_split(single_scenario_dataset(dataset, merged, s),
                             SplitConfig(cold_fraction=0.0, tie_break=args.tie_break))
        rows = np.array([merged.item_index[i] for i in single.item_ids])
        single_lm = FineTunedLM(lm.pooled, lm.tokenizer, lm.source, lm.text[rows], lm.stats)
        single_users = np.array([single.user_index[merged.user_ids[u]] for u in users])
        if not np.array_equal(np.array(single.item_ids)[single.test_items[single_users]],
                              np.array(merged.item_ids)[targets]):
            raise AssertionError(f"scenario {s}: the single-scenario split's test items differ from the merged ones")
        every = np.ones(single.n_items, dtype=bool)
        for name, make in (("lmrec-single", lambda e, bias: LMRecommender(config, "int8", fixed_epochs=e,
                                                                          cold_bias=bias, lm=single_lm)),
                           ("sasrec-single", sasrec)):
            model = fit_two(make, single, single, f"{name}[{s}]")
            record(name, s, domain_ranks(_scored(model.score, single_users), single, single_users,
                                         single.test_items[single_users], every))
    result = _summary(per_user, epochs, seconds, views, args, time.perf_counter() - started)
    result["served_vs_torch"] = served_vs_torch
    return result


def _summary(per_user: dict, epochs: dict, seconds: dict, views: ScenarioViews, args: argparse.Namespace,
             total_s: float) -> dict:
    from training.evaluate import machine_description

    out = {"dataset": views.test.dataset_name, "protocol": __doc__.split("\n\n")[1].strip(),
           "scenarios": {}, "epochs": epochs, "fit_seconds": seconds,
           "run": {"command": " ".join(["python -m training.scenario_eval", *sys.argv[1:]]),
                   "seconds": round(total_s, 1), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "machine": machine_description()}}
    for s, rows in per_user.items():
        entry = {"users": int(len(views.users[s])), "models": {}, "lmrec-scenario_vs": {}}
        for name, values in rows.items():
            entry["models"][name] = {m: float(values[m].mean()) for m in ("ndcg@10", "hr@10")}
            entry["models"][name]["ndcg@10_ci"] = list(metrics.bootstrap_ci(values["ndcg@10"], seed=args.seed))
        ours = rows["lmrec-scenario"]
        for name, values in rows.items():
            if name == "lmrec-scenario":
                continue
            test = metrics.paired_permutation_test(ours["ndcg@10"], values["ndcg@10"], seed=args.seed)
            base = float(values["ndcg@10"].mean())
            entry["lmrec-scenario_vs"][name] = {
                "ndcg@10_rel_diff": (float(ours["ndcg@10"].mean()) - base) / base if base else None,
                "p_value": test["p_value"]}
        out["scenarios"][s] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.scenario_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/amazon-art-office"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tie-break", choices=["file", "item_id"], default="file")
    parser.add_argument("--finetune-steps", type=int, default=0, help="LM fine-tuning steps for every lmrec row")
    parser.add_argument("--max-epochs", type=int, default=None, help="cap on every sequence model's epochs")
    parser.add_argument("--users-fraction", type=float, default=1.0,
                        help="evaluate on a seeded share of the users (every item stays a candidate)")
    parser.add_argument("--text-cache", type=Path, default=None,
                        help="folder keeping the pre-trained LM's item text vectors between runs")
    parser.add_argument("--quick", action="store_true", help="tiny models (tests)")
    args = parser.parse_args(argv)
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{result['dataset']}_scenarios.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({s: e["models"] for s, e in result["scenarios"].items()}, indent=1), file=sys.stderr)
    print(f"wrote {path} in {result['run']['seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
