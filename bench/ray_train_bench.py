"""Training steps/s of `lmrec train`'s fits: in-process vs 1 and 2 Ray Train workers, on ML-100K.

    python bench/ray_train_bench.py                           # 40 LM steps + 2 epochs, three modes
    python bench/ray_train_bench.py --lm-steps 10 --epochs 1 --modes in-process,ray-2   # a quick look

Bounded: the default configuration with `--lm-steps` fine-tuning steps and `--epochs` fixed epochs of the
sequence model (no validation fit, no export), i.e. the fits of `lmrec train --holdout --epochs E
--finetune-steps S`. Steps/s come from the loops' own reports (training/replica.py: steps and the seconds
spent in them, rank 0's), so they exclude start-up, loading the LM, caching its frozen layers, embedding
the catalogue and checkpointing, which the wall time includes. The global batch is the same in every mode
(32 pairs, 128 windows a step), so a step is the same work split over the workers.

Modes: `in-process` (the default threads: 2 for the LM, 1 for the sequence model, whose small matrices
gain little from a second thread on a busy machine: training/sequences.torch_threads); `in-process-2threads`
(2 for both, every core in use, the fair baseline for 2 workers); `ray-1` (one worker with all `--cpus`,
threads as `in-process`); `ray-2` (two workers of `--cpus`/2 each, one thread each). Writes
docs/benchmarks/ray_train.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmrec_data.datasets import load_dataset, resolve_data_path  # noqa: E402
from training.distributed import RayTrainOptions, fit_on_ray  # noqa: E402
from training.lm_config import LMRecConfig  # noqa: E402
from training.replica import Replica, running_as  # noqa: E402
from training.split import SplitConfig, build_split  # noqa: E402
from training.bundle_fit import fit_bundle_model  # noqa: E402


class RecordingReplica(Replica):
    """The single process, keeping the loops' reports."""

    def __init__(self) -> None:
        self.reported: list[dict] = []

    def report(self, stage: str, metrics: dict) -> None:
        self.reported.append({"stage": stage, **metrics})


def rates(loops: list[dict], config: LMRecConfig) -> dict:
    out = {}
    for loop in loops:
        name = "lm_finetune" if loop["stage"] == "lm_finetune" else "sequence"
        per_step = config.finetune.batch_pairs if name == "lm_finetune" else config.batch_size
        out[name] = {"steps": loop["steps"], "seconds": loop["seconds"],
                     "steps_per_s": round(loop["steps"] / loop["seconds"], 2) if loop["seconds"] else None,
                     "examples_per_step": per_step}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="default $LMREC_DATA, else ../shared/data/ml-100k")
    parser.add_argument("--lm-steps", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--modes", default="in-process,in-process-2threads,ray-1,ray-2")
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--json-out", type=Path, default=Path("docs/benchmarks/ray_train.json"))
    args = parser.parse_args()

    data = build_split(load_dataset(resolve_data_path(args.data)), SplitConfig())
    base = LMRecConfig()
    config = dataclasses.replace(base, finetune=dataclasses.replace(base.finetune, steps=args.lm_steps))
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU", "data": data.dataset_name,
               "lm_steps": args.lm_steps, "epochs": args.epochs,
               "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "load_average_before": os.getloadavg(), "modes": {}}
    for mode in args.modes.split(","):
        if mode.startswith("in-process"):
            local = dataclasses.replace(config, threads=2) if mode == "in-process-2threads" else config
            started = time.perf_counter()
            with running_as(RecordingReplica()) as replica:
                fit_bundle_model(data, data, local, args.epochs, True)
            loops = replica.reported
            row = {"threads": {"lm": local.finetune.threads, "sequence": local.threads}}
        else:
            import ray

            workers = int(mode.split("-")[1])
            if not ray.is_initialized():
                started = time.perf_counter()
                ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
                results["ray_start_seconds"] = round(time.perf_counter() - started, 2)
            started = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="ray-train-bench-") as storage:  # the run's checkpoint
                options = RayTrainOptions(workers=workers, cpus_per_worker=args.cpus / workers, storage=storage)
                trained, _, _ = fit_on_ray(options, data, data, config, args.epochs, True)
            loops = trained.seconds["loops"]
            row = {"workers": workers, "cpus_per_worker": options.cpus_per_worker}
        row.update({"wall_seconds": round(time.perf_counter() - started, 1), **rates(loops, config)})
        if "lm_finetune" not in row:  # fine_tuned_lm's cache: the LM configuration is the in-process row's
            row["lm_finetune"] = "not run: the in-process row's fine-tuned LM (same configuration) is reused"
        results["modes"][mode] = row
        print(mode, row, flush=True)
    results["load_average_after"] = os.getloadavg()
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
