"""`lmrec train --ray`: the bundle's fits run data-parallel on Ray Train workers; the driver exports.

Each worker runs the single-process procedure (training.bundle_fit.fit_bundle_model) as one replica
(training/replica.py): DistributedDataParallel over gloo on CPUs, NCCL on GPUs, each worker on its shard
of the LM's co-occurrence pairs and of the sequence model's windows, with the global batch of one process
split over the workers, so a run takes the optimiser steps of a single-process run. The trained model
comes back to the driver as a Ray Train checkpoint, and the driver exports it as `lmrec train` always
does (training/lm_bundle.py); the manifest's `hyperparameters.distributed` records the workers.

Ray is imported only here, and only when `--ray` is given. A run that fails is not resumed: the final
checkpoint is the only one written (the fits take minutes on ML-100K; see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.lm_recommender import trained_from_state, trained_state
from training.replica import Replica, local_batch, running_as, shard_rows

log = logging.getLogger(__name__)
PAYLOAD = "trained.pt"
DEFAULT_WORKERS = 2


def add_ray_train_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data-parallel training on Ray Train (lmrec[ray])")
    group.add_argument("--ray", action="store_true",
                       help="fit on Ray Train workers (DDP); the driver exports the bundle")
    group.add_argument("--ray-address", help="Ray cluster to join (default: $RAY_ADDRESS, else a new local one)")
    group.add_argument("--workers", type=int, help=f"Ray Train workers (default {DEFAULT_WORKERS})")
    group.add_argument("--gpus-per-worker", type=float,
                       help="GPUs per worker (default 0: CPU workers over gloo; > 0: NCCL)")
    group.add_argument("--cpus-per-worker", type=float,
                       help="CPUs reserved per worker, also its torch threads (default 1)")
    group.add_argument("--ray-storage", help="where Ray Train keeps the run and its checkpoint: a path every "
                                             "node can read (NFS) or a URI such as s3://... "
                                             "(default ~/ray_results, fine on one machine)")


@dataclasses.dataclass(frozen=True)
class RayTrainOptions:
    workers: int = DEFAULT_WORKERS
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    address: str | None = None
    storage: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise ValueError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"--cpus-per-worker must be > 0, got {self.cpus_per_worker}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RayTrainOptions | None:
        """The options of `lmrec train` (None without --ray); a Ray flag without --ray is an error."""
        given = {"workers": args.workers, "gpus_per_worker": args.gpus_per_worker,
                 "cpus_per_worker": args.cpus_per_worker, "address": args.ray_address, "storage": args.ray_storage}
        given = {k: v for k, v in given.items() if v is not None}
        if not args.ray:
            if given:
                flags = ", ".join(f"--{k.replace('_', '-')}" for k in given)
                raise SystemExit(f"lmrec train: {flags} only apply with --ray")
            return None
        try:
            return cls(**given)
        except ValueError as exc:
            raise SystemExit(f"lmrec train: {exc}") from None

    @property
    def backend(self) -> str:
        return "nccl" if self.gpus_per_worker > 0 else "gloo"

    def record(self, config) -> dict:
        """What the manifest says about the run (hyperparameters.distributed)."""
        import ray

        return {"framework": f"ray-train {ray.__version__}", "workers": self.workers, "backend": self.backend,
                "cpus_per_worker": self.cpus_per_worker, "gpus_per_worker": self.gpus_per_worker,
                "lm_pairs_per_worker": local_batch(config.finetune.batch_pairs, self.workers),
                "sequence_windows_per_worker": local_batch(config.batch_size, self.workers)}


class _Step(torch.nn.Module):
    """A loop's forward computation as a module, so DDP sees the parameters it reads (`owner`'s) and
    prepares their gradient averaging on every call."""

    def __init__(self, step: Callable[..., Any], owner: torch.nn.Module) -> None:
        super().__init__()
        self.owner = owner
        self.step = step

    def forward(self, *args):
        return self.step(*args)


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 whose backward hands each replica the sum of every replica's gradient for
    its own rows (an all-reduce, which gloo and NCCL both have; the tensors are a batch of embeddings)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rows, ctx.rank = tensor.shape[0], dist.get_rank()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


class RayTrainReplica(Replica):
    """This Ray Train worker as a replica: rank and world from its train context, DDP from
    ray.train.torch.prepare_model, collectives from torch.distributed (set up by the TorchTrainer).
    With one worker every method reduces to the single-process one, so the run is the same."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world = context.get_world_size()
        self._device = ray.train.torch.get_device()
        self.reported: list[dict] = []

    @property
    def device(self) -> torch.device:
        return self._device

    def seed(self, seed: int) -> int:
        if self.world == 1:
            return seed
        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])

    def shard(self, rows):
        if self.world == 1:
            return rows
        index = shard_rows(len(rows), self.rank, self.world)
        return rows[index] if isinstance(rows, np.ndarray) else [rows[i] for i in index]

    def local_batch(self, global_batch: int) -> int:
        return local_batch(global_batch, self.world)

    def wrap(self, step: Callable[..., Any], owner: torch.nn.Module) -> Callable[..., Any]:
        import ray.train.torch

        # Not every parameter takes part in every loss (e.g. the logit scale of raw heads); the item
        # texts are a large fixed buffer, the same on every worker, so it is not re-broadcast each step.
        wrapped = ray.train.torch.prepare_model(
            _Step(step, owner), parallel_strategy_kwargs={"find_unused_parameters": True,
                                                          "forward_sync_buffers": False})
        if self.world > 1:
            # DDP has broadcast rank 0's initial weights; from here dropout masks should differ per worker.
            torch.manual_seed(self.seed(torch.initial_seed()))
        return wrapped

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.world == 1 else _GatherRows.apply(tensor)

    def agreed(self, compute: Callable[[], float]) -> Callable[[], float]:
        if self.world == 1:
            return compute

        def on_rank0() -> float:
            value = torch.tensor([compute() if self.rank == 0 else 0.0], dtype=torch.float64, device=self.device)
            torch.distributed.broadcast(value, src=0)
            return float(value.item())

        return on_rank0

    def report(self, stage: str, metrics: dict) -> None:
        import ray.train

        self.reported.append({"stage": stage, **metrics})
        ray.train.report({"stage": stage, **metrics})


def _worker_config(config, cpus: float):
    """The driver's config with torch threads capped at the CPUs Ray reserved for the worker."""
    threads = max(1, int(cpus))
    return dataclasses.replace(config, threads=min(config.threads, threads),
                               finetune=dataclasses.replace(config.finetune,
                                                            threads=min(config.finetune.threads, threads)))


def train_loop_per_worker(loop_config: dict) -> None:
    """One Ray Train worker: the single-process fits as one replica; rank 0 checkpoints the result."""
    import ray
    import ray.train

    from training.bundle_fit import fit_bundle_model

    started = time.perf_counter()
    data, final = ray.get(loop_config["data"]), ray.get(loop_config["final"])
    config = _worker_config(loop_config["config"], loop_config["cpus_per_worker"])
    with running_as(RayTrainReplica()) as replica:
        trained, epochs, validation = fit_bundle_model(data, final, config, loop_config["epochs"],
                                                       loop_config["holdout"])
    # Every loop's steps and seconds (rank 0's), in the manifest's train_seconds: what the workers spent
    # training, apart from starting, loading the LM and checkpointing.
    trained.seconds = {**trained.seconds, "loops": replica.reported}
    metrics = {"stage": "done", "epochs": epochs, "seconds": round(time.perf_counter() - started, 1)}
    with tempfile.TemporaryDirectory(prefix="lmrec-train-") as tmp:
        checkpoint = None
        if replica.rank == 0:
            payload = {"trained": trained_state(trained), "epochs": epochs, "validation": validation}
            torch.save(payload, Path(tmp) / PAYLOAD)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def fit_on_ray(options: RayTrainOptions, data, final, config, epochs: int | None, holdout: bool):
    """fit_bundle_model on `options.workers` Ray Train workers; returns what it returns, in the driver.

    Joins the cluster at `options.address` (else $RAY_ADDRESS, else starts a local one) unless this
    process is already connected.
    """
    try:
        import ray
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError as exc:
        raise SystemExit(f"lmrec train --ray needs lmrec[ray] (ray[train]): {exc}") from None

    if not ray.is_initialized():
        ray.init(address=options.address)
    resources = {"CPU": options.cpus_per_worker}
    if options.gpus_per_worker:
        resources["GPU"] = options.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,
        # The splits go through the object store, not the (size-limited) loop config.
        train_loop_config={"data": ray.put(data), "final": ray.put(final), "config": config, "epochs": epochs,
                           "holdout": holdout, "cpus_per_worker": options.cpus_per_worker},
        torch_config=TorchConfig(backend=options.backend),
        scaling_config=ScalingConfig(num_workers=options.workers, use_gpu=options.gpus_per_worker > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=f"lmrec-train-{dt.datetime.now():%Y%m%d-%H%M%S}", storage_path=options.storage,
                             checkpoint_config=CheckpointConfig(num_to_keep=1),
                             failure_config=FailureConfig(max_failures=0)),
    )
    log.info("training on %d Ray Train worker(s) (%s)", options.workers, options.backend)
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"the Ray Train run ended without its checkpoint (metrics: {result.metrics})")
    with result.checkpoint.as_directory() as directory:
        # Written by train_loop_per_worker of this very run (numpy arrays in it need the full unpickler).
        payload = torch.load(Path(directory) / PAYLOAD, map_location="cpu", weights_only=False)
    # The driver's config, not the workers' (they capped their threads): the manifest records the run's.
    return trained_from_state(payload["trained"], final, config), payload["epochs"], payload["validation"]
