"""Item-encoding throughput of `lmrec encode-catalog`: in-process vs a Ray Data pool of 1 and 2 actors.

    python bench/ray_encode_bench.py                                  # 100k synthetic texts
    python bench/ray_encode_bench.py --items 2000 --modes in-process,ray-2   # a quick look

Synthetic catalogue texts shaped like ML-100K's (`Title words (year) Genres: a, b.`, ~15 tokens), so that
none is served from the bundle's training-time text vectors: every item goes through the ONNX item
encoder (FP32, the worker's default item precision) and the item tower, as after a model swap that
changed the encoder. The same bundle, batch size and code (training/encode_catalog.py) on every side.

Each mode reports the wall time of the whole encoding (for Ray: actor start-up and model loading
included; the cluster's own start is timed apart) and the steady items/s over the run. The in-process
mode gets every core as ONNX Runtime threads; each actor gets `--cpus-per-actor` (default 1). The load
average before and after is printed: on a shared machine other jobs take cores too.

Writes docs/benchmarks/ray_encode.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.encode_catalog import (add_encode_arguments, encode_in_process, encode_on_ray,  # noqa: E402
                                     encoder_settings)
from ranking_service.batch_encode import VectorsWriter  # noqa: E402

WORDS = ("night river love story man woman city war last first little big dark house blue return girl boy king "
         "dead life day home time world star secret lost summer winter heart dream game road island ghost fire "
         "sun moon family friend wild storm gold silver shadow angel devil street father mother brother sister "
         "kiss dance song music killer hunter rain snow sea sky mountain forest garden school party wedding "
         "murder escape journey promise truth lie"
         ).split()
GENRES = ("Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy Film-Noir Horror Musical "
          "Mystery Romance Sci-Fi Thriller War Western").split()


def synthetic_catalogue(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(n):
        title = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 6)))).title()
        genres = ", ".join(rng.choice(GENRES, size=int(rng.integers(1, 4)), replace=False))
        texts.append(f"{title} ({int(rng.integers(1930, 2025))}) Genres: {genres}.")
    return [f"synthetic-{i}" for i in range(n)], texts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("artifacts/lmrec-ml100k"))
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--modes", default="in-process,ray-1,ray-2",
                        help="comma-separated: in-process, ray-N (N actors)")
    parser.add_argument("--cpus-per-actor", type=float, default=1.0)
    parser.add_argument("--ray-cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray cluster")
    parser.add_argument("--json-out", type=Path, default=Path("docs/benchmarks/ray_encode.json"))
    args = parser.parse_args()

    item_ids, texts = synthetic_catalogue(args.items)
    encode_args = add_encode_arguments(argparse.ArgumentParser()).parse_args(
        ["--bundle", str(args.bundle), "--device", "cpu"])
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU", "items": args.items,
               "batch_size": args.batch_size, "bundle": str(args.bundle),
               "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "load_average_before": os.getloadavg(), "modes": {}}
    reference = None
    with tempfile.TemporaryDirectory(prefix="ray-encode-bench-") as tmp:
        for mode in args.modes.split(","):
            out = Path(tmp) / f"{mode}.npy"

            def writer_for(count, dimension, version, out=out):
                return VectorsWriter(out, count, dimension, version)

            row = {}
            if mode == "in-process":
                started = time.perf_counter()
                writer = encode_in_process(encoder_settings(encode_args), item_ids, texts, args.batch_size, writer_for)
            else:
                import ray

                actors = int(mode.split("-")[1])
                if not ray.is_initialized():
                    started = time.perf_counter()
                    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
                    ray.data.DataContext.get_current().enable_progress_bars = False
                    results["ray_start_seconds"] = round(time.perf_counter() - started, 2)
                started = time.perf_counter()
                writer = encode_on_ray(encoder_settings(encode_args, max(1, int(args.cpus_per_actor))), item_ids,
                                       texts, args.batch_size, writer_for, actors, args.cpus_per_actor)
                row["actors"], row["cpus_per_actor"] = actors, args.cpus_per_actor
            seconds = time.perf_counter() - started
            writer.close(item_ids)
            vectors = np.load(out)
            if reference is None:
                reference = vectors
            row.update({"seconds": round(seconds, 2), "items_per_s": round(args.items / seconds, 1),
                        "max_abs_diff_vs_first_mode": float(np.abs(vectors - reference).max())})
            results["modes"][mode] = row
            print(mode, row, flush=True)
    results["load_average_after"] = os.getloadavg()
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
