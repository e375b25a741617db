"""What a training loop needs to know to run as one of several data-parallel replicas, or alone.

The loops (training/lm_finetune.finetune_encoder, training/sequences.fit_next_item) ask `current()` for
their replica. The default is `LOCAL`, one process, and changes nothing they do. training/distributed.py
installs a Ray Train + torch.distributed (DDP) replica in each worker with `running_as`; this module
imports neither, so the model code stays free of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


def shard_rows(n: int, rank: int, world: int) -> np.ndarray:
    """Row indices of replica `rank` of `world` over n rows: rank, rank + world, ... after wrapping around
    to the start until every replica has ceil(n / world) rows (as torch's DistributedSampler pads), so
    every replica runs the same number of steps, which DDP's collectives need."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    per_replica = -(-n // world)
    return np.arange(rank, per_replica * world, world, dtype=np.int64) % n


def local_batch(global_batch: int, world: int) -> int:
    """Per-replica share of a global batch, so N replicas take the optimiser steps one process takes."""
    return max(1, global_batch // world)


class Replica:
    """One process training alone: every method is the identity or a no-op."""

    rank = 0
    world = 1

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def seed(self, seed: int) -> int:
        """A seed for this replica's sampling: `seed` alone, distinct per replica otherwise."""
        return seed

    def shard(self, rows: T) -> T:
        """This replica's part of `rows` (a list or an array), shard_rows' order."""
        return rows

    def local_batch(self, global_batch: int) -> int:
        return global_batch

    def wrap(self, step: Callable[..., Any], owner: torch.nn.Module) -> Callable[..., Any]:
        """`step` (a forward computation over `owner`'s parameters) made data-parallel: gradients are
        averaged over replicas at backward, as DistributedDataParallel does."""
        return step

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every replica's `tensor`, concatenated along dim 0 in rank order; differentiable (the backward
        sums the replicas' gradients into each one's own part)."""
        return tensor

    def agreed(self, compute: Callable[[], float]) -> Callable[[], float]:
        """`compute` run by rank 0 alone, its value handed to every replica (an early-stopping score,
        so that all replicas stop at the same epoch)."""
        return compute

    def report(self, stage: str, metrics: dict) -> None:
        """What a loop did, once at its end: its steps and their seconds (training only), and what it
        reached (rank 0's numbers are what a run records); every replica calls it at the same points.
        Not per epoch: a Ray Train report is a barrier across the workers, measured at ~1 s each on a
        loaded 2-core machine."""


LOCAL = Replica()
_CURRENT: ContextVar[Replica] = ContextVar("lmrec_training_replica", default=LOCAL)


def current() -> Replica:
    return _CURRENT.get()


@contextmanager
def running_as(replica: Replica) -> Iterator[Replica]:
    """The training loops called meanwhile (in this thread) run as `replica`."""
    token = _CURRENT.set(replica)
    try:
        yield replica
    finally:
        _CURRENT.reset(token)
