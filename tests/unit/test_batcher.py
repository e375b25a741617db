"""Micro-batching: sharing, bounded queue, expired deadlines dropped before running."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from lmrec.errors import DeadlineExceeded, Overloaded
from ranking_service.batcher import MicroBatcher


def fake_model(delay_s: float = 0.0):
    calls: list[int] = []

    def run(texts):
        calls.append(len(texts))
        time.sleep(delay_s)
        return np.array([[float(len(t))] for t in texts], dtype=np.float32)

    return run, calls


def test_concurrent_requests_share_one_call():
    run, calls = fake_model()

    async def main():
        batcher = MicroBatcher(run, max_batch=64, max_wait_ms=20, max_queue=100)
        batcher.start()
        results = await asyncio.gather(*[batcher.submit(["x" * n]) for n in range(1, 11)])
        await batcher.close()
        return results, batcher.stats

    results, stats = asyncio.run(main())
    assert [r[0, 0] for r in results] == list(range(1, 11))  # each caller gets its own rows
    assert calls == [10] and stats.batches == 1 and stats.batch_size_histogram[10] == 1


def test_batches_never_exceed_max_batch():
    run, calls = fake_model()

    async def main():
        batcher = MicroBatcher(run, max_batch=4, max_wait_ms=5, max_queue=100)
        batcher.start()
        await asyncio.gather(*[batcher.submit(["a", "b", "c"]) for _ in range(5)], batcher.submit(["z"] * 9))
        await batcher.close()

    asyncio.run(main())
    assert max(calls) <= 4 and sum(calls) == 24


def test_full_queue_is_refused_at_once():
    gate = threading.Event()

    def blocked(texts):
        gate.wait(5)
        return np.zeros((len(texts), 1), dtype=np.float32)

    async def main():
        batcher = MicroBatcher(blocked, max_batch=1, max_wait_ms=0, max_queue=2)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(["running"]))
        await asyncio.sleep(0.05)  # the worker has taken it; the queue is empty again
        waiting = [asyncio.ensure_future(batcher.submit([f"q{i}"])) for i in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded, match="queue is full"):
            await batcher.submit(["one too many"])
        gate.set()
        await asyncio.gather(first, *waiting)
        await batcher.close()
        return batcher.stats.rejected_overload

    assert asyncio.run(main()) == 1


def test_expired_work_is_dropped_not_run():
    run, calls = fake_model(delay_s=0.1)

    async def main():
        batcher = MicroBatcher(run, max_batch=1, max_wait_ms=0, max_queue=10)
        batcher.start()
        busy = asyncio.ensure_future(batcher.submit(["occupies the model for 100 ms"]))
        await asyncio.sleep(0.01)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(["too late"], deadline=time.monotonic() + 0.02)
        await busy
        await batcher.close()
        return batcher.stats.dropped_expired

    assert asyncio.run(main()) == 1
    assert calls == [1]  # only the first request ever reached the model


def test_retiring_a_batcher_answers_every_caller():
    """A hot swap drains then closes the old batcher: the batch in the model is waited for, not cancelled,
    and a call that picked the old model just before the swap but submits afterwards still gets its answer."""
    run, calls = fake_model(delay_s=0.2)

    async def main():
        batcher = MicroBatcher(run, max_batch=64, max_wait_ms=1, max_queue=100)
        batcher.start()
        in_model = asyncio.ensure_future(batcher.submit(["abc"]))
        await asyncio.sleep(0.05)  # taken off the queue, running in the model
        assert batcher.queue_depth == 0
        await batcher.drain(5.0)
        assert in_model.done()
        await batcher.close()
        late = await batcher.submit(["late!"])
        return in_model.result(), late

    in_model, late = asyncio.run(main())
    assert in_model[0, 0] == 3.0 and late[0, 0] == 5.0
    assert calls == [1, 1]


def test_lanes_batch_apart_in_arrival_order_and_share_when_one_function():
    """Queries and item texts may run on two encoders: a batch holds one lane's work, each caller gets
    its own lane's rows, and lanes that name the same function still share batches."""
    order: list[tuple[str, int]] = []

    def model(name: str, scale: float):
        def run(texts):
            order.append((name, len(texts)))
            return np.array([[scale * len(t)] for t in texts], dtype=np.float32)
        return run

    query, item = model("query", 1.0), model("item", 100.0)

    async def main(lanes):
        batcher = MicroBatcher(lanes, max_batch=64, max_wait_ms=20, max_queue=100)
        batcher.start()
        results = await asyncio.gather(batcher.submit(["q"], lane="query"), batcher.submit(["ii"], lane="item"),
                                       batcher.submit(["qqq"], lane="query"), batcher.submit(["i"], lane="item"))
        await batcher.close()
        return [r[0, 0] for r in results]

    assert asyncio.run(main({"query": query, "item": item})) == [1.0, 200.0, 3.0, 100.0]
    assert order == [("query", 2), ("item", 2)]  # the oldest work's lane first, then the other
    order.clear()

    class Encoder:  # lanes over one encoder get two bound methods: equal, though not the same object
        def encode(self, texts):
            return query(texts)

    encoder = Encoder()
    assert asyncio.run(main({"query": encoder.encode, "item": encoder.encode})) == [1.0, 2.0, 3.0, 1.0]
    assert order == [("query", 4)]
