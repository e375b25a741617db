"""Test NDCG@10 of the sequential models (lmrec, SASRec) over several model seeds on one split.

The evaluation table holds one model seed per row; this refits each model on the test phase with other
seeds, keeping what seed 0's validation chose (SASRec's parameters and epochs from results.json; lmrec's
epochs and cold bias from the trained bundle's manifest), so it measures seed noise, not tuning. lmrec is
scored with its PyTorch model in FP32, which ranks as the served FP32 graphs do (tests check that).

    python bench/seed_spread.py --seeds 1,2 [--bundle artifacts/lmrec-ml100k] [--results docs/evaluation/results.json]

Seed 0's per-user figures are read from the evaluation run (lmrec-fp32 and sasrec rows), so run
`lmrec evaluate` first. Prints one JSON line per fit and a summary with a paired permutation test of the
seed-averaged per-user NDCG@10.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from lmrec_data.datasets import load_dataset, resolve_data_path
from lmrec.bundle import load_manifest
from training.metrics import paired_permutation_test, phase_ndcg10
from training.split import SplitConfig, build_split


def lmrec_scores(data, seed: int, epochs: int, cold_bias: float) -> np.ndarray:
    from training import lm_recommender

    trained = lm_recommender.train(data, "test", lm_recommender.LMRecConfig(seed=seed), epochs)
    trained.cold_bias = cold_bias
    history = data.history_sequences("test")
    return lm_recommender.torch_scores(trained, [history[u] for u in range(data.n_users)])


def sasrec_scores(data, seed: int, params: dict) -> np.ndarray:
    from training.baselines.sasrec import SASRec

    model = SASRec(**params, seed=seed)
    model.fit(data, "test")
    return model.score(np.arange(data.n_users))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="dataset directory (default: $LMREC_DATA, else ../shared/data/ml-100k)")
    parser.add_argument("--seeds", default="1,2", help="model seeds besides 0 (comma-separated)")
    parser.add_argument("--bundle", type=Path, default=Path("artifacts/lmrec-ml100k"))
    parser.add_argument("--results", type=Path, default=Path("docs/evaluation/results.json"))
    args = parser.parse_args(argv)

    data = build_split(load_dataset(resolve_data_path(args.data)), SplitConfig())
    hp = load_manifest(args.bundle).hyperparameters
    run = json.loads(args.results.read_text())[data.dataset_name]
    sasrec_params = dict(run["tuning"]["sasrec"]["best_params"])
    saved = np.load(args.results.parent / f"{data.dataset_name}_per_user.npz")
    per_user = {"lmrec": [saved["lmrec-fp32|ndcg@10"]], "sasrec": [saved["sasrec|ndcg@10"]]}
    for seed in (int(s) for s in args.seeds.split(",") if s):
        for name in ("lmrec", "sasrec"):
            started = time.perf_counter()
            scores = (lmrec_scores(data, seed, int(hp["epochs"]), float(hp.get("cold_bias", 0.0))) if name == "lmrec"
                      else sasrec_scores(data, seed, sasrec_params))
            per_user[name].append(phase_ndcg10(scores, data, "test", np.arange(data.n_users)))
            print(json.dumps({"model": name, "seed": seed, "ndcg@10": float(per_user[name][-1].mean()),
                              "seconds": round(time.perf_counter() - started)}), flush=True)
    means = {name: [float(v.mean()) for v in values] for name, values in per_user.items()}
    lm, sas = np.mean(per_user["lmrec"], axis=0), np.mean(per_user["sasrec"], axis=0)
    print(json.dumps({"ndcg@10_by_seed": means,
                      "mean": {n: float(np.mean(v)) for n, v in means.items()},
                      "sd": {n: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for n, v in means.items()},
                      "seed_averaged_lmrec_vs_sasrec": paired_permutation_test(lm, sas, seed=0)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
