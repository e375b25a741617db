"""Sequence batching shared by the sequential models (SASRec and the LM recommender).

Histories are left-padded item index + 1 (0 = pad), so the newest item always sits in the last column.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from tqdm.auto import tqdm

from training.replica import current

PAD = 0


@contextmanager
def torch_threads(threads: int | None):
    """Runs with `threads` intra-op threads, restoring the previous count.

    One thread is the default because on a small shared CPU the per-op sync of a second thread costs
    more than it gains for these small matrices (measured 3x slower per step under load).
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def left_pad(seqs: list[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for row, seq in enumerate(seqs):
        seq = seq[-length:]
        if len(seq):
            out[row, length - len(seq):] = seq + 1
    return out


def training_windows(seqs: list[np.ndarray], length: int, all_windows: bool) -> list[np.ndarray]:
    """The last `length` items of each history, plus (all_windows) the earlier non-overlapping windows."""
    windows = []
    for seq in seqs:
        end = len(seq)
        while end >= 2:
            windows.append(seq[max(0, end - length):end])
            if not all_windows:
                break
            end -= length - 1
    return windows


def length_bucketed_batches(windows: list[np.ndarray], batch_size: int, rng: np.random.Generator):
    """Batches of similar-length windows, padded only to the batch's longest, in random order.

    Padding to a fixed max_len wastes most of the compute when histories are short; sorting with a
    random jitter keeps batches tight while still varying their composition from epoch to epoch.
    """
    lengths = np.array([len(w) for w in windows]) + rng.uniform(0, 8, size=len(windows))
    order = np.argsort(lengths)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for b in rng.permutation(len(batches)):
        chosen = [windows[i] for i in batches[b]]
        yield left_pad(chosen, max(len(w) for w in chosen))


class EarlyStopping:
    """Keeps the network state with the best validation score; says when `patience` checks in a row
    have not improved on it.

    With `smooth` > 1 the score of a check is the mean of the last `smooth` checks: on a noisy plateau a
    single lucky check otherwise decides the epoch count (docs/tuning.md#smooth-checks).
    """

    def __init__(self, patience: int, smooth: int = 1) -> None:
        self.patience = patience
        self.smooth = max(1, smooth)
        self._recent: list[float] = []
        self.best = -1.0
        self.best_epoch: int | None = None
        self._state: dict | None = None
        self._stale = 0

    def update(self, epoch: int, score: float, net: torch.nn.Module) -> bool:
        """Records one validation check; returns True when training should stop."""
        self._recent = (self._recent + [score])[-self.smooth:]
        score = sum(self._recent) / len(self._recent)
        if score > self.best:
            self.best, self.best_epoch, self._stale = score, epoch, 0
            self._state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            return False
        self._stale += 1
        return self._stale >= self.patience

    def restore(self, net: torch.nn.Module) -> None:
        if self._state is not None:
            net.load_state_dict(self._state)


class WeightAverage:
    """Exponential moving average of a network's parameters (Polyak averaging).

    One epoch on ML-100K is only ~16 optimiser steps, so the weights at any one epoch carry the noise of
    the last few batches: the validation curve of both sequence models jumps by ±0.006 NDCG@10 from one
    check to the next on its plateau. The average over the last few hundred steps sits on the plateau.
    """

    def __init__(self, net: torch.nn.Module, decay: float) -> None:
        self.net, self.decay = net, decay
        self.state = {k: v.detach().clone() for k, v in net.named_parameters()}

    @torch.no_grad()
    def update(self) -> None:
        for k, v in self.net.named_parameters():
            self.state[k].lerp_(v, 1.0 - self.decay)

    @contextmanager
    def swapped_in(self):
        """The averaged weights in the network for the duration (validation, or the final copy-out)."""
        live = {k: v.detach().clone() for k, v in self.net.named_parameters()}
        self.net.load_state_dict(self.state, strict=False)
        try:
            yield
        finally:
            self.net.load_state_dict(live, strict=False)


def fit_next_item(net: torch.nn.Module, windows: list[np.ndarray], *, lr: float, batch_size: int, epochs: int,
                  rng: np.random.Generator, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  validate: Callable[[], float] | None = None, eval_every: int = 1, patience: int = 1,
                  smooth: int = 1, weight_average: float = 0.0,
                  desc: str = "train") -> tuple[list[tuple[int, float]], int | None]:
    """The next-item training loop the sequential models share: Adam over length-bucketed windows, and,
    when `validate` is given, early stopping on its score every `eval_every` epochs with the best state
    restored (`smooth`: see EarlyStopping). `loss_fn(inputs, targets)` gets each batch split into
    positions and their next items. With `weight_average` (a per-step decay, e.g. 0.99) validation and
    the returned network use the moving average of the weights (WeightAverage).

    Returns the validation curve [(epoch, score)] and the best epoch (None without validation).

    As one of N data-parallel replicas (training/replica.py), each trains on its shard of the windows
    with batch_size / N of them per step (the optimiser steps of one process), and rank 0's validation
    score decides for all.
    """
    replica = current()
    windows = replica.shard(windows)
    batch_size = replica.local_batch(batch_size)
    step = replica.wrap(loss_fn, net)
    validate = replica.agreed(validate) if validate is not None else None
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    stopper, curve = EarlyStopping(patience, smooth), []
    average = WeightAverage(net, weight_average) if weight_average else None
    bar = tqdm(range(1, epochs + 1), desc=desc, leave=False, disable=replica.rank > 0)
    epoch, steps, seconds = 0, 0, 0.0
    for epoch in bar:
        net.train()
        started = time.perf_counter()
        for batch in length_bucketed_batches(windows, batch_size, rng):
            batch = torch.from_numpy(batch).to(replica.device)
            loss = step(batch[:, :-1], batch[:, 1:])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if average is not None:
                average.update()
            steps += 1
        seconds += time.perf_counter() - started
        if validate is not None and epoch % eval_every == 0:
            with average.swapped_in() if average is not None else nullcontext():
                net.eval()
                score = validate()
                stop = stopper.update(epoch, score, net)
            curve.append((epoch, score))
            bar.set_postfix(ndcg10=f"{score:.4f}")
            if stop:
                break
    replica.report(desc, {"epochs": epoch, "steps": steps, "seconds": round(seconds, 3),
                          "best_epoch": stopper.best_epoch,
                          "best_ndcg@10": stopper.best if stopper.best_epoch is not None else None})
    if average is not None and stopper.best_epoch is None:
        net.load_state_dict(average.state, strict=False)
    stopper.restore(net)
    net.eval()
    return curve, stopper.best_epoch
