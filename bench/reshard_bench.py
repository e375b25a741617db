"""Resharding benchmark: grow the retrieval tier from 2 to 3 shards under a steady search load.

    python bench/reshard_bench.py                       # 20k 384-d items, 50 searches/s
    python bench/reshard_bench.py --n 100000 --rate 100

Starts two retrieval shard processes (as `lmrec serve` does), loads N random vectors placed by
`lmrec.sharding`, starts shard 2 of 3, and runs an open-loop search load (each search fans out to every
shard of the current shard map and merges, de-duplicated, as a gateway does; latency counts from the
scheduled send time, so a stall shows up instead of being skipped). After a quiet window it runs
`lmrec reshard --from 2 --to 3 --shard-map FILE` as a separate process, as an operator would; the load
generator re-reads the map file every 50 ms. Reports wall time per phase, items moved (count and share),
search errors, searches whose own item was missing from its top k, and p50/p99 latency before, during and
after the move. Adds its run to docs/benchmarks/reshard.json with the 1-minute load average at start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import grpc  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lmrec.sharding import ShardMap, merge_shard_results, shard_for  # noqa: E402
from lmrec_tools.supervisor import ProcessGroup, SystemLayout, start_retrieval_shard  # noqa: E402
from lmrec.v1 import retrieval_service_pb2 as rt, retrieval_service_pb2_grpc as rt_grpc  # noqa: E402

OUT = REPO / "docs" / "benchmarks" / "reshard.json"


def rebuild_copy_chunk() -> int:
    from retrieval_service import index

    return index._COPY_CHUNK


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{cpu}, {os.cpu_count()} vCPUs, Python {platform.python_version()}"


class Load:
    """Open-loop searches at a fixed rate over the shard map in a file."""

    def __init__(self, map_file: Path, vectors: np.ndarray, ids: list[str], k: int, rate: float) -> None:
        self.map_file = map_file
        self.map = ShardMap.load(map_file)
        self.vectors, self.ids, self.k, self.rate = vectors, ids, k, rate
        self.stubs: dict[str, rt_grpc.RetrievalServiceStub] = {}
        self.channels: list[grpc.aio.Channel] = []
        self.samples: list[tuple[float, float, bool, bool]] = []  # (scheduled, latency s, error, missing)
        self.stop = asyncio.Event()
        self.rng = np.random.default_rng(1)

    def stub(self, address: str) -> rt_grpc.RetrievalServiceStub:
        if address not in self.stubs:
            channel = grpc.aio.insecure_channel(address)
            self.channels.append(channel)
            self.stubs[address] = rt_grpc.RetrievalServiceStub(channel)
        return self.stubs[address]

    async def watch(self) -> None:
        while not self.stop.is_set():
            self.map = ShardMap.load(self.map_file)
            await asyncio.sleep(0.05)

    async def one(self, scheduled: float) -> None:
        n = int(self.rng.integers(len(self.ids)))
        request = rt.SearchRequest(query_vector=self.vectors[n].tolist(), k=self.k)
        error = missing = False
        try:
            answers = await asyncio.gather(*(self.stub(a).Search(request, timeout=5) for a in self.map.addresses))
            merged = merge_shard_results([[(r.item_id, r.score) for r in a.results] for a in answers], self.k)
            missing = self.ids[n] not in {item_id for item_id, _ in merged}
        except grpc.aio.AioRpcError:
            error = True
        self.samples.append((scheduled, time.monotonic() - scheduled, error, missing))

    async def run(self) -> None:
        interval, start, sent = 1.0 / self.rate, time.monotonic(), 0
        pending = set()
        while not self.stop.is_set():
            scheduled = start + sent * interval
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.one(scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        await asyncio.gather(*pending)

    def window(self, start: float, end: float) -> dict:
        rows = [s for s in self.samples if start <= s[0] < end]
        ok = np.array([s[1] for s in rows if not s[2]]) * 1000
        return {
            "searches": len(rows),
            "errors": sum(1 for s in rows if s[2]),
            "own_item_missing": sum(1 for s in rows if s[3]),
            "p50_ms": round(float(np.percentile(ok, 50)), 2) if len(ok) else None,
            "p99_ms": round(float(np.percentile(ok, 99)), 2) if len(ok) else None,
            "max_ms": round(float(ok.max()), 2) if len(ok) else None,
        }


async def load_items(addresses: list[str], ids: list[str], vectors: np.ndarray, batch: int = 1000) -> None:
    channels = [grpc.aio.insecure_channel(a) for a in addresses]
    stubs = [rt_grpc.RetrievalServiceStub(c) for c in channels]
    owners = np.array([shard_for(i, len(addresses)) for i in ids])
    for start in range(0, len(ids), batch):
        calls = []
        for shard, stub in enumerate(stubs):
            rows = [n for n in range(start, min(start + batch, len(ids))) if owners[n] == shard]
            calls.append(stub.Upsert(rt.UpsertRequest(items=[
                rt.IndexedItem(item_id=ids[n], vector=vectors[n].tolist()) for n in rows]), timeout=300))
        await asyncio.gather(*calls)
    for channel in channels:
        await channel.close()


async def measure(args, addresses: list[str], map_file: Path, ids: list[str], vectors: np.ndarray) -> dict:
    load = Load(map_file, vectors, ids, args.k, args.rate)
    tasks = [asyncio.create_task(load.run()), asyncio.create_task(load.watch())]
    await asyncio.sleep(args.warmup_s)
    before_start = time.monotonic()
    await asyncio.sleep(args.before_s)
    move_start = time.monotonic()
    command = [sys.executable, "-m", "lmrec_tools.cli", "reshard", "--from", "2", "--to", "3",
               "--shards", ",".join(addresses), "--shard-map", str(map_file), "--drain-s", str(args.drain_s),
               "--batch", str(args.batch), "--json"]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, cwd=REPO)
    move_end = time.monotonic()
    if done.returncode != 0:
        raise SystemExit(f"lmrec reshard failed:\n{done.stderr}")
    report = json.loads(done.stdout)
    await asyncio.sleep(args.after_s)
    after_end = time.monotonic()
    load.stop.set()
    await asyncio.gather(*tasks)
    for channel in load.channels:
        await channel.close()
    slow = sorted((s for s in load.samples if s[0] >= move_start - 1 and not s[2]), key=lambda s: -s[1])[:8]
    return {
        "reshard": report,
        "reshard_process_wall_s": round(move_end - move_start, 2),
        # When the slowest searches around the move were sent, in seconds after `lmrec reshard` started
        # (its phases, in order: check, fence, copy, switch (incl. drain), drop).
        "slowest_searches": [{"sent_at_s": round(s[0] - move_start, 2), "ms": round(s[1] * 1000, 1)} for s in slow],
        "search_before": load.window(before_start, move_start),
        "search_during": load.window(move_start, move_end),
        "search_after": load.window(move_end, after_end),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384, help="the served dimension (MiniLM bundles: 384)")
    parser.add_argument("--rate", type=float, default=50.0, help="searches per second, open loop")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--before-s", type=float, default=15.0)
    parser.add_argument("--after-s", type=float, default=10.0)
    parser.add_argument("--drain-s", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--shard-flags", default="", help="extra flags for every shard, e.g. "
                                                            "'--tombstone-rebuild-ratio 1.0'")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    ids = [f"item-{i}" for i in range(args.n)]
    with tempfile.TemporaryDirectory(prefix="reshard-bench-") as tmp:
        state = Path(tmp)
        layout = SystemLayout(state_dir=state, bundle_dir=state, shards=2, retrieval_port=0, dimension=args.dim,
                              extra_args={f"retrieval-{i}": args.shard_flags.split() for i in range(3)})
        group = ProcessGroup(state / "run")
        try:
            old = [start_retrieval_shard(group, layout, i).address for i in range(2)]
            started = time.monotonic()
            asyncio.run(load_items(old, ids, vectors))
            load_s = time.monotonic() - started
            new = start_retrieval_shard(group, layout, 2, shard_count=3).address
            map_file = state / "shard-map.json"
            ShardMap(tuple(old), epoch=0).save(map_file)
            result = asyncio.run(measure(args, [*old, new], map_file, ids, vectors))
        finally:
            group.stop_all()
    run = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "note": "shared with other jobs; the load average says how busy",
        "load_average_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "items": args.n, "dimension": args.dim, "search_rate_per_s": args.rate, "k": args.k,
        "shard_flags": args.shard_flags,
        # Rows a tombstone rebuild copies per GIL-holding hnswlib call (retrieval_service/index.py).
        "rebuild_copy_chunk": rebuild_copy_chunk(),
        "initial_load_s": round(load_s, 1),
        **result,
    }
    print(json.dumps(run, indent=2))
    runs = json.loads(args.out.read_text())["runs"] if args.out.is_file() else []
    args.out.write_text(json.dumps({"runs": [*runs, run]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
