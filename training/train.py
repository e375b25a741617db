"""`lmrec train`: interactions + item texts -> a versioned, checked serving bundle.

Two kinds of bundle (the manifest's `training_data` says which):
  * production (the default, what `make run` serves): a validation fit on the evaluation split chooses
    the number of epochs by early stopping on validation NDCG@10 and calibrates the text-only item bias;
    then the model is refit on **every** interaction of every user, with no item held out as cold;
  * evaluation (`--holdout`): the same validation fit, then a refit on train + validation of the split
    (test interactions and the split's cold items never reach it), so `lmrec evaluate --target` (or
    `--model-option bundle=`) can score it honestly on that split's test items.
Both are exported with their parity checks, and, when the data has ratings, with a rating head fitted on
the bundle's own trunk over the ratings of the history it was trained on (training/rating_export.py).
`--exclude-users` drops every interaction of the users a gateway erased (lmrec/erasure.py) before any of
this; the manifest's `hyperparameters.exclusion` says how many.
`--ray` runs the fits data-parallel on Ray Train workers (training/distributed.py); the driver exports
the bundle as above, and the manifest's `hyperparameters.distributed` records the workers.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from lmrec_data.datasets import load_dataset, resolve_data_path
from lmrec.erasure import load_erased
from lmrec_data.exclusion import Exclusion, exclude_users
from lmrec.bundle import Manifest, load_manifest
from training.bundle_fit import fit_bundle_model
from training.distributed import RayTrainOptions, add_ray_train_arguments
from training.lm_bundle import export_bundle
from training.lm_config import LMRecConfig
from training.rating_export import add_rating_head, export_config
from training.split import SplitConfig, all_interactions, build_split

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
    parser.add_argument("--holdout", action="store_true",
                        help="build the evaluation bundle: trained without each user's last interaction and the "
                             "split's cold items, for `lmrec evaluate`; the default trains on every interaction")
    parser.add_argument("--cold-fraction", type=float, default=0.1,
                        help="share of items held out as cold in the evaluation split (default 0.1)")
    parser.add_argument("--tie-break", choices=["file", "item_id"], default="file",
                        help="order of same-timestamp interactions: the data file's (default) or by item id")
    parser.add_argument("--finetune-steps", type=int, help="LM fine-tuning steps (0 = keep the pre-trained LM)")
    parser.add_argument("--epochs", type=int, help="skip the validation fit and train this many epochs")
    parser.add_argument("--dim", type=int, help="collaborative vector size")
    parser.add_argument("--exclude-users", metavar="FILE_OR_URL",
                        help="drop every interaction of the users erased through the gateway: its "
                             "<state_dir>/erased-users.txt, or the postgresql:// URL of its database")
    add_ray_train_arguments(parser)
    return parser


def run_train(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    ray_options = RayTrainOptions.from_args(args)
    config = LMRecConfig.from_options(args.config == "tiny", args.seed, args.lm, args.finetune_steps, args.dim)
    dataset = load_dataset(resolve_data_path(args.data))
    exclusion = None
    if args.exclude_users:
        dataset, exclusion = exclude_users(dataset, load_erased(args.exclude_users))
        print(f"--exclude-users: {exclusion.users} of {exclusion.listed} listed users found, "
              f"{exclusion.interactions} interactions dropped", file=sys.stderr)
    data = build_split(dataset, SplitConfig(cold_fraction=args.cold_fraction, seed=args.seed,
                                            tie_break=args.tie_break))
    print(f"{data.dataset_name}: {data.n_users} users, {data.n_items} items; "
          f"{'evaluation (held-out) bundle' if args.holdout else 'production bundle on every interaction'}",
          file=sys.stderr)
    final = data if args.holdout else all_interactions(dataset, args.tie_break)
    if ray_options is None:
        trained, epochs, validation = fit_bundle_model(data, final, config, args.epochs, args.holdout)
    else:
        from training.distributed import fit_on_ray

        trained, epochs, validation = fit_on_ray(ray_options, data, final, config, args.epochs, args.holdout)
    if validation:
        print(f"validation: best epoch {epochs}, curve {validation['curve']}; cold bias {validation['cold_bias']} "
              f"({validation['cold_calibration'].get('chosen')})", file=sys.stderr)
    # The rating head is fitted on the staged bundle's own graphs, over the ratings of the history it was
    # trained on, so it is in the bundle when a watching ranking worker swaps it in.
    head_config = export_config(args.config == "tiny")
    bundle = export_bundle(trained, final, args.out,
                           training_data="holdout" if args.holdout else "all", validation_split=data.config,
                           extend=lambda staged: with_distributed(with_exclusion(
                               add_rating_head(staged, dataset, final, head_config), exclusion),
                               ray_options.record(config) if ray_options else None))
    manifest = load_manifest(bundle)
    summary = {"bundle": str(bundle), "model_version": manifest.model_version,
               "training_data": manifest.hyperparameters["training_data"], "epochs": epochs,
               "seconds": round(time.perf_counter() - started, 1), "parity": manifest.parity,
               "index_params": manifest.index_params,
               "rating_head": manifest.hyperparameters["rating_head"] or manifest.hyperparameters["rating_head_absent"],
               "exclusion": manifest.hyperparameters["exclusion"]}
    if "distributed" in manifest.hyperparameters:
        summary["distributed"] = manifest.hyperparameters["distributed"]
    print(json.dumps(summary, indent=2))
    return 0


def with_distributed(manifest: Manifest, record: dict | None) -> Manifest:
    """The manifest recording the Ray Train run that fitted it (RayTrainOptions.record); a single-process
    run's (None) is left as it was."""
    if record is None:
        return manifest
    return manifest.model_copy(update={"hyperparameters": {**manifest.hyperparameters, "distributed": record}})


def with_exclusion(manifest: Manifest, exclusion: Exclusion | None) -> Manifest:
    """The manifest recording what `--exclude-users` dropped (None: no list was given)."""
    record = exclusion.as_dict() if exclusion else None
    return manifest.model_copy(update={"hyperparameters": {**manifest.hyperparameters, "exclusion": record}})


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_train(add_train_arguments(argparse.ArgumentParser(prog="lmrec train", description=__doc__)).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
