"""`lmrec encode-catalog`: every catalogue item's served vector, in bulk, with a bundle's item encoder.

In this process, or with `--ray` as a Ray Data batch-inference pipeline: the item texts are split into
blocks, an actor pool of `--actors` (each loads the bundle's ONNX sessions once, in its constructor)
encodes them batch by batch, and the driver writes each row where it belongs as results stream back. Both
paths run ranking_service/batch_encode.CatalogEncoder, the ranking worker's own item encoding, so their
vectors agree to float rounding (the batches are the same; see tests/integration/test_ray_train_encode_catalog.py).

Output (ranking_service/batch_encode.py says how each is read): `--out FILE.npy` plus FILE.ids.json, and
with `--item-store` the rows a ranking worker on this bundle loads instead of encoding: point it at the
worker's `<state_dir>/item_repr.sqlite`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import typing
from pathlib import Path

import numpy as np

from ranking_service.batch_encode import CatalogEncoder, VectorsWriter, put_in_item_store
from ranking_service.settings import RankingSettings

log = logging.getLogger(__name__)
DEFAULT_BUNDLE = Path("artifacts/lmrec-ml100k")
DEFAULT_OUT = Path("var/encoded/item_vectors.npy")
# Rows per Ray Data block, in batches: enough blocks that every actor has work, few enough that the
# per-block overhead (a task, an object in the store) stays small next to encoding 16 batches.
BATCHES_PER_BLOCK = 16


def add_encode_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--data", help="dataset directory (default: $LMREC_DATA, else ../shared/data/ml-100k)")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help=f"model bundle (default {DEFAULT_BUNDLE})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"vectors file (default {DEFAULT_OUT}); ids go to the same name with .ids.json")
    parser.add_argument("--item-store", type=Path,
                        help="also store the vectors in this ranking item store (a worker's "
                             "<state_dir>/item_repr.sqlite), under the bundle's model version")
    parser.add_argument("--batch-size", type=int, default=256, help="texts per encoder call (default 256)")
    # The encoding knobs are the ranking worker's (RankingSettings), so the vectors are the ones it serves.
    fields = RankingSettings.model_fields
    for name in ("device", "precision", "item_precision"):
        parser.add_argument(f"--{name.replace('_', '-')}", choices=typing.get_args(fields[name].annotation),
                            help=f"as the ranking worker's (default {fields[name].default})")
    ray = parser.add_argument_group("on a Ray Data actor pool (lmrec[ray])")
    ray.add_argument("--ray", action="store_true", help="encode on a Ray Data actor pool")
    ray.add_argument("--ray-address", help="Ray cluster to join (default: $RAY_ADDRESS, else a new local one)")
    ray.add_argument("--actors", type=int, default=2, help="encoder actors (default 2)")
    ray.add_argument("--cpus-per-actor", type=float, default=1.0,
                     help="CPUs per actor, also its ONNX Runtime threads (default 1)")
    ray.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per actor (with --device cuda)")
    return parser


def encoder_settings(args: argparse.Namespace, threads: int = 0) -> RankingSettings:
    """The ranking worker's settings for this bundle, with the flags given (else its defaults/environment)."""
    given = {k: getattr(args, k) for k in ("device", "precision", "item_precision") if getattr(args, k, None)}
    return RankingSettings(bundle_dir=args.bundle, intra_op_threads=threads, warmup=False, **given)


def encode_in_process(settings: RankingSettings, item_ids: list[str], texts: list[str], batch_size: int,
                      writer_for) -> VectorsWriter:
    """`writer_for(count, dimension, model_version)` makes the writer once the model is loaded."""
    encoder = CatalogEncoder(settings)
    try:
        writer = writer_for(len(item_ids), encoder.dimension, encoder.model_version)
        for start in range(0, len(item_ids), batch_size):
            end = min(start + batch_size, len(item_ids))
            writer.write(np.arange(start, end), encoder.encode(item_ids[start:end], texts[start:end]))
    finally:
        encoder.close()
    return writer


class EncodeBatch:
    """A Ray Data actor: loads the encoder once, then encodes the batches it is handed."""

    def __init__(self, settings: dict) -> None:
        self.encoder = CatalogEncoder(RankingSettings(**settings))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"row": batch["row"], "vector": self.encoder.encode(batch["item_id"].tolist(), batch["text"].tolist())}


def encode_on_ray(settings: RankingSettings, item_ids: list[str], texts: list[str], batch_size: int,
                  writer_for, actors: int, cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0,
                  address: str | None = None) -> VectorsWriter:
    """encode_in_process's work on a Ray Data pool of `actors` (joins `address`, else $RAY_ADDRESS, else
    starts a local cluster, unless this process is connected already)."""
    from lmrec.bundle import load_manifest

    try:
        import pyarrow as pa
        import ray
        import ray.data
    except ImportError as exc:
        raise SystemExit(f"lmrec encode-catalog --ray needs lmrec[ray] (ray[data]): {exc}") from None

    if not ray.is_initialized():
        ray.init(address=address)
    manifest = load_manifest(settings.bundle_dir)
    writer = writer_for(len(item_ids), manifest.served_dimension, manifest.model_version)
    n = len(item_ids)
    block = batch_size * max(1, min(BATCHES_PER_BLOCK, -(-n // (batch_size * actors * 4))))
    tables = [pa.table({"row": np.arange(s, min(s + block, n)), "item_id": item_ids[s:s + block],
                        "text": texts[s:s + block]}) for s in range(0, n, block)]
    pipeline = ray.data.from_arrow(tables).map_batches(
        EncodeBatch, fn_constructor_kwargs={"settings": settings.model_dump()}, batch_size=batch_size,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor or None)
    for batch in pipeline.iter_batches(batch_size=None, batch_format="numpy"):
        writer.write(batch["row"], batch["vector"])
    return writer


def catalogue(data: str | None) -> tuple[list[str], list[str]]:
    """(item ids, texts) of a dataset's catalogue, first text of a repeated id, in file order."""
    from lmrec_data.datasets import load_dataset, resolve_data_path

    texts: dict[str, str] = {}
    for item in load_dataset(resolve_data_path(data)).items:
        texts.setdefault(item.item_id, item.text)
    return list(texts), list(texts.values())


def run_encode(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.actors < 1:
        raise SystemExit("lmrec encode-catalog: --batch-size and --actors must be at least 1")
    item_ids, texts = catalogue(args.data)
    started = time.perf_counter()

    def writer_for(count: int, dimension: int, model_version: str) -> VectorsWriter:
        return VectorsWriter(args.out, count, dimension, model_version)

    if args.ray:
        threads = max(1, int(args.cpus_per_actor))
        writer = encode_on_ray(encoder_settings(args, threads), item_ids, texts, args.batch_size, writer_for,
                               args.actors, args.cpus_per_actor, args.gpus_per_actor, args.ray_address)
    else:
        writer = encode_in_process(encoder_settings(args), item_ids, texts, args.batch_size, writer_for)
    writer.close(item_ids)
    seconds = time.perf_counter() - started
    stored = None
    if args.item_store:
        from ranking_service.batch_encode import read_vectors

        _, vectors, version = read_vectors(args.out)
        stored = put_in_item_store(args.item_store, version, item_ids, texts, vectors)
    print(json.dumps({"items": len(item_ids), "model_version": writer.model_version, "dimension": writer.dimension,
                      "mode": f"ray data, {args.actors} actor(s)" if args.ray else "in-process",
                      "encode_seconds": round(seconds, 2), "items_per_s": round(len(item_ids) / seconds, 1),
                      "out": str(args.out), "item_store": str(args.item_store) if args.item_store else None,
                      "stored": stored}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="lmrec encode-catalog", description=__doc__)
    return run_encode(add_encode_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
