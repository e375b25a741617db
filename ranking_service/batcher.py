"""Dynamic micro-batching: concurrent requests' texts share one ONNX Runtime call.

Work waits at most `max_wait_ms` for company, a batch holds at most `max_batch` texts, the queue is
bounded (past it new work is refused at once), and work whose caller's deadline has passed is dropped
before it runs rather than computed for nobody.

Work comes in lanes, each with its own model function (the ranking worker's: queries on the serving
precision, item texts on FP32). One queue and one model thread serve every lane, so lanes never run at
once and contend for the cores; a batch holds work of one function only, taken in arrival order.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from lmrec.errors import DeadlineExceeded, DependencyUnavailable, Overloaded

if TYPE_CHECKING:
    from ranking_service.metrics import RankingMetrics


RunBatch = Callable[[list[str]], np.ndarray]
DEFAULT_LANE = "default"


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future
    deadline: float | None
    run: RunBatch
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatcherStats:
    batches: int = 0
    texts: int = 0
    dropped_expired: int = 0
    rejected_overload: int = 0
    batch_size_histogram: Counter = field(default_factory=Counter)
    queue_wait_ms_total: float = 0.0
    run_ms_total: float = 0.0


class MicroBatcher:
    """`run_batch`: one model function, or {lane: function}; lanes sharing a function share batches."""

    def __init__(self, run_batch: RunBatch | Mapping[str, RunBatch], max_batch: int, max_wait_ms: float,
                 max_queue: int, metrics: RankingMetrics | None = None) -> None:
        self._lanes = dict(run_batch) if isinstance(run_batch, Mapping) else {DEFAULT_LANE: run_batch}
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        # One thread: ONNX Runtime already uses every core inside a call; parallel calls would only contend.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx")
        self._worker: asyncio.Task | None = None
        self._running: list[_Pending] = []  # the batch in the model now, out of the queue
        self._closed = False
        self.stats = BatcherStats()
        self._metrics = metrics
        if metrics is not None:
            metrics.watch_queue(lambda: len(self._queue))

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def drain(self, timeout_s: float) -> None:
        """Waits until every queued and running request has been answered (or `timeout_s` passes): before
        a close that must not fail the callers already waiting, e.g. when a hot swap retires this batcher."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while True:
            # Waiting on the futures themselves, not polling: their callers were registered first, so they
            # resume before this returns and a close right after can't overtake an answer being delivered.
            waiting = [p.future for p in (*self._running, *self._queue) if not p.future.done()]
            remaining = end - loop.time()
            if not waiting or remaining <= 0:
                return
            await asyncio.wait(waiting, timeout=remaining)

    async def close(self) -> None:
        """Stops batching. Callers still waiting (a drain that timed out) get UNAVAILABLE, never silence;
        callers that submit afterwards (a call that picked this model just before a swap) are run alone."""
        self._closed = True
        waiting = [*self._running, *self._queue]
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        for p in waiting:
            if not p.future.done():
                p.future.set_exception(DependencyUnavailable("the ranking model was retired while this call waited"))
        self._running, self._queue = [], deque()
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str], deadline: float | None = None, lane: str = DEFAULT_LANE) -> np.ndarray:
        """Encodes texts as part of some batch of `lane`. `deadline` is a time.monotonic() value."""
        run = self._lanes[lane]
        if self._closed:
            return await asyncio.to_thread(self._run_chunked, run, list(texts))
        if len(self._queue) >= self.max_queue:
            self.stats.rejected_overload += 1
            if self._metrics is not None:
                self._metrics.refused.inc()
            raise Overloaded(f"ranking queue is full ({self.max_queue} requests waiting); retry later")
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(list(texts), future, deadline, run))
        self._wakeup.set()
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            first_at = self._queue[0].enqueued
            while sum(len(p.texts) for p in self._queue) < self.max_batch:
                remaining = first_at + self.max_wait - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take_batch()
            if not batch:
                continue
            texts = [t for p in batch for t in p.texts]
            started = time.monotonic()
            self._running = batch
            try:
                vectors = await loop.run_in_executor(self._executor, self._run_chunked, batch[0].run, texts)
            except Exception as exc:  # handed to every waiting caller, which maps it to a status
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            finally:
                self._running = []
            self._record(batch, len(texts), started)
            offset = 0
            for p in batch:
                if not p.future.done():
                    p.future.set_result(vectors[offset: offset + len(p.texts)])
                offset += len(p.texts)

    def _take_batch(self) -> list[_Pending]:
        """The oldest live work and, in arrival order, what else of its lane fits; the rest stays queued."""
        now = time.monotonic()
        batch: list[_Pending] = []
        kept: deque[_Pending] = deque()
        size = 0
        while self._queue:
            p = self._queue.popleft()
            if p.future.done():  # caller went away (cancelled)
                continue
            if p.deadline is not None and p.deadline <= now:
                self.stats.dropped_expired += 1
                if self._metrics is not None:
                    self._metrics.expired.inc()
                p.future.set_exception(DeadlineExceeded("deadline passed while queued for the ranking model"))
                continue
            # `!=`, not `is not`: two bound methods of one encoder are equal, not the same object.
            if batch and p.run != batch[0].run:
                kept.append(p)
                continue
            if batch and size + len(p.texts) > self.max_batch:
                kept.append(p)
                break
            batch.append(p)
            size += len(p.texts)
        kept.extend(self._queue)
        self._queue = kept
        return batch

    def _run_chunked(self, run: RunBatch, texts: list[str]) -> np.ndarray:
        # A single oversized request still runs, in max_batch slices, so shapes stay within warm-up.
        parts = [run(texts[i: i + self.max_batch]) for i in range(0, len(texts), self.max_batch)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _record(self, batch: list[_Pending], n_texts: int, started: float) -> None:
        run_s = time.monotonic() - started
        waits_s = [started - p.enqueued for p in batch]
        s = self.stats
        s.batches += 1
        s.texts += n_texts
        s.batch_size_histogram[n_texts] += 1
        s.queue_wait_ms_total += sum(waits_s) * 1000
        s.run_ms_total += run_s * 1000
        if self._metrics is not None:
            self._metrics.observe_batch(n_texts, waits_s, run_s)
