"""`lmrec train`: interactions + item texts -> a versioned, checked serving bundle.

Runs the evaluation protocol's split (docs/evaluation.md), so the bundle can be evaluated honestly with
`lmrec evaluate --target` once served: a validation fit chooses the number of epochs by early stopping
on validation NDCG@10, then the model is refit on train + validation (test interactions and the cold
items never reach it) and exported with its parity checks.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from lmrec.datasets import load_dataset, resolve_data_path
from lmrec.manifest import load_manifest
from training.lm_bundle import export_bundle
from training.lm_recommender import LMRecConfig, LMRecommender, train
from training.split import SplitConfig, build_split

log = logging.getLogger(__name__)
DEFAULT_OUT = Path("artifacts/lmrec-ml100k")


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--data", help="dataset directory (default: $LMREC_DATA, else ../shared/data/ml-100k)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"bundle directory (default {DEFAULT_OUT}); "
                        "replaced atomically, so a running `lmrec serve` watching it hot-swaps")
    parser.add_argument("--lm", default=None, help="HF encoder folder or name (default: bundled all-MiniLM-L6-v2)")
    parser.add_argument("--config", choices=["default", "tiny"], default="default",
                        help="tiny: seconds-long smoke configuration (CI)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cold-fraction", type=float, default=0.1)
    parser.add_argument("--finetune-steps", type=int, help="LM fine-tuning steps (0 = keep the pre-trained LM)")
    parser.add_argument("--epochs", type=int, help="skip the validation fit and train this many epochs")
    parser.add_argument("--dim", type=int, help="collaborative vector size")
    return parser


def run_train(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    config = LMRecConfig.from_options(args.config == "tiny", args.seed, args.lm, args.finetune_steps, args.dim)
    dataset = load_dataset(resolve_data_path(args.data))
    data = build_split(dataset, SplitConfig(cold_fraction=args.cold_fraction, seed=args.seed))
    print(f"{data.dataset_name}: {data.n_users} users, {data.n_items} items", file=sys.stderr)
    epochs = args.epochs
    validation = {}
    if epochs is None:
        probe = LMRecommender(config)
        probe.fit(data, "validation")
        epochs = probe.trained.epochs
        validation = {"curve": probe.trained.curve, "best_epoch": epochs,
                      "cold_bias": probe.trained.cold_bias, "cold_calibration": probe.trained.cold_calibration}
        print(f"validation: best epoch {epochs}, curve {probe.trained.curve}; cold bias {probe.trained.cold_bias} "
              f"({probe.trained.cold_calibration.get('chosen')})", file=sys.stderr)
    trained = train(data, "test", config, epochs)
    trained.curve = validation.get("curve", [])
    trained.cold_bias = validation.get("cold_bias", 0.0)
    trained.cold_calibration = validation.get("cold_calibration", {"rule": "not calibrated (--epochs given)"})
    bundle = export_bundle(trained, data, args.out)
    manifest = load_manifest(bundle)
    summary = {"bundle": str(bundle), "model_version": manifest.model_version, "epochs": epochs,
               "seconds": round(time.perf_counter() - started, 1), "parity": manifest.parity,
               "index_params": manifest.index_params}
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_train(add_train_arguments(argparse.ArgumentParser(prog="lmrec train", description=__doc__)).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
