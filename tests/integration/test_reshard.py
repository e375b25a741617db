"""Growing the retrieval tier from 2 to 3 shards under search traffic: real shard processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from lmrec.sharding import Placement, ShardMap, merge_shard_results, shard_for
from lmrec_tools.supervisor import ProcessGroup, StartupError, SystemLayout, start_retrieval_shard
from lmrec.v1 import common_pb2, retrieval_service_pb2 as rt, retrieval_service_pb2_grpc as rt_grpc
from retrieval_service.admin import PlacementAdminClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DIM = 16
N_ITEMS = 3_000


class Readers:
    """Search for random known items over the shard map in a file, re-read when it changes, as a gateway
    watching `--shard-map` would."""

    def __init__(self, map_file: Path, vectors: dict[str, np.ndarray]) -> None:
        self.map_file = map_file
        self.map = ShardMap.load(map_file)
        self.vectors = vectors
        self.ids = list(vectors)
        self.stubs: dict[str, rt_grpc.RetrievalServiceStub] = {}
        self.channels: list[grpc.aio.Channel] = []
        self.searches_by_epoch: dict[int, int] = {}
        self.lost: list[tuple[int, str]] = []
        self.errors: list[str] = []
        self.duplicates_merged = 0
        self.stop = asyncio.Event()

    def stub(self, address: str) -> rt_grpc.RetrievalServiceStub:
        if address not in self.stubs:
            channel = grpc.aio.insecure_channel(address)
            self.channels.append(channel)
            self.stubs[address] = rt_grpc.RetrievalServiceStub(channel)
        return self.stubs[address]

    async def run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            shard_map = self.map  # one map per search, like a request planned before a switch
            item_id = rng.choice(self.ids)
            request = rt.SearchRequest(query_vector=self.vectors[item_id].tolist(), k=3)
            try:
                answers = await asyncio.gather(*(self.stub(a).Search(request, timeout=10) for a in shard_map.addresses))
            except grpc.aio.AioRpcError as exc:
                self.errors.append(f"{exc.code().name}: {exc.details()}")
                continue
            per_shard = [[(r.item_id, r.score) for r in answer.results] for answer in answers]
            merged = merge_shard_results(per_shard, 3)
            self.duplicates_merged += sum(len(a) for a in per_shard) - len({i for a in per_shard for i, _ in a})
            if merged[0][0] != item_id:
                self.lost.append((shard_map.epoch, item_id))
            self.searches_by_epoch[shard_map.epoch] = self.searches_by_epoch.get(shard_map.epoch, 0) + 1
            await asyncio.sleep(0)

    async def watch(self) -> None:
        while not self.stop.is_set():
            self.map = ShardMap.load(self.map_file)
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


def test_growing_from_two_to_three_shards_under_search_traffic(tmp_path):
    layout = SystemLayout(state_dir=tmp_path, bundle_dir=tmp_path, shards=2, retrieval_port=0, dimension=DIM,
                          # Exact scans: "the item is its own nearest neighbour" holds without HNSW recall noise.
                          extra_args={f"retrieval-{i}": ["--exact-scan-threshold", "100000"] for i in range(3)})
    group = ProcessGroup(tmp_path / "run")
    try:
        old = [start_retrieval_shard(group, layout, i).address for i in range(2)]
        asyncio.run(scenario(group, layout, old))
    finally:
        group.stop_all()


def lmrec(*args: str) -> dict:
    """`lmrec reshard ... --json` as a separate process, as an operator runs it."""
    done = subprocess.run([sys.executable, "-m", "lmrec_tools.cli", *args, "--json"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def scenario(group: ProcessGroup, layout: SystemLayout, old: list[str]) -> None:
    rng = np.random.default_rng(11)
    ids = [f"movie-{i}" for i in range(N_ITEMS)]
    vectors = dict(zip(ids, rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)))
    parity = {item_id: str(n % 2) for n, item_id in enumerate(ids)}
    channels = {a: grpc.aio.insecure_channel(a) for a in old}
    stubs = {a: rt_grpc.RetrievalServiceStub(c) for a, c in channels.items()}
    for start in range(0, N_ITEMS, 500):
        batch = ids[start:start + 500]
        for shard, address in enumerate(old):
            items = [rt.IndexedItem(item_id=i, vector=vectors[i].tolist(),
                                    attributes={"parity": common_pb2.AttributeValues(values=[parity[i]])})
                     for i in batch if shard_for(i, 2) == shard]
            await stubs[address].Upsert(rt.UpsertRequest(items=items), timeout=30)
    expected_moves = {i for i in ids if shard_for(i, 2) != shard_for(i, 3)}

    # The new shard is started as shard 2 of 3, empty; readers do not know it yet.
    new = start_retrieval_shard(group, layout, 2, shard_count=3).address
    addresses = [*old, new]
    channels[new] = grpc.aio.insecure_channel(new)
    stubs[new] = rt_grpc.RetrievalServiceStub(channels[new])
    map_file = layout.state_dir / "shard-map.json"
    ShardMap(tuple(old), epoch=0).save(map_file)
    readers = Readers(map_file, vectors)
    tasks = [asyncio.create_task(readers.run(seed)) for seed in range(2)] + [asyncio.create_task(readers.watch())]
    shards = ["--from", "2", "--to", "3", "--shards", ",".join(addresses), "--batch", "256"]
    try:
        await asyncio.sleep(0.5)
        # Copy first, as an operator who switches readers by hand would; writes to moving items are fenced.
        copied = await asyncio.to_thread(lmrec, "reshard", *shards, "--step", "copy")
        assert copied["moved"] == len(expected_moves)
        moving = sorted(expected_moves)[0]
        mover = rt.IndexedItem(item_id=moving, vector=vectors[moving].tolist())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stubs[old[shard_for(moving, 2)]].Upsert(rt.UpsertRequest(items=[mover]), timeout=10)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "resharding is in progress" in refused.value.details()
        await asyncio.sleep(0.3)
        # Then everything, through the readers' shard map file; copying again (a rerun after a crash, say)
        # changes nothing.
        report = await asyncio.to_thread(lmrec, "reshard", *shards, "--shard-map", str(map_file), "--drain-s", "1")
        await asyncio.sleep(0.3)
    finally:
        readers.stop.set()
        await asyncio.gather(*tasks)
        await readers.close()

    assert not readers.errors
    assert not readers.lost, f"searches missed {len(readers.lost)} items, e.g. {readers.lost[:5]}"
    assert readers.searches_by_epoch.get(0, 0) > 20 and readers.searches_by_epoch.get(1, 0) > 20
    assert readers.duplicates_merged > 0  # moved items were briefly on two shards, and the merge hid it

    share = report["moved"] / N_ITEMS
    assert 0.25 <= share <= 0.42, share
    assert report["moved"] == report["deleted_from_old"] == len(expected_moves)
    assert report["items_before"] == report["items_after"] == N_ITEMS
    assert (report["from_placement"], report["to_placement"]) == (str(Placement(2)), str(Placement(3)))
    assert ShardMap.load(map_file) == ShardMap(tuple(addresses), epoch=1)

    # Every item is on exactly its new owner, with its attributes.
    for shard, address in enumerate(addresses):
        state = await PlacementAdminClient(channels[address]).get(10, count_misplaced=True)
        assert (state.shard_index, state.placement, state.moving_from) == (shard, Placement(3), None)
        assert state.misplaced == 0
        assert state.item_count == sum(1 for i in ids if shard_for(i, 3) == shard)
    for item_id in random.Random(3).sample(ids, 200):
        holders = []
        for shard, address in enumerate(addresses):
            found = await stubs[address].Search(rt.SearchRequest(query_item_ids=[item_id], k=1), timeout=10)
            if found.plan != "none":
                holders.append(shard)
        assert holders == [shard_for(item_id, 3)], item_id
    moved = sorted(expected_moves)[:20]
    same_parity = rt.SearchRequest(query_vector=vectors[moved[0]].tolist(), k=1,
                                   filters=[common_pb2.AttributeFilter(key="parity", values=[parity[moved[0]]])])
    assert (await stubs[new].Search(same_parity, timeout=10)).results[0].item_id == moved[0]
    # Writes follow the new map: the moved item is writable on its new shard.
    await stubs[new].Upsert(rt.UpsertRequest(items=[mover]), timeout=10)
    for channel in channels.values():
        await channel.close()

    # The shard count is recorded: restarting an old shard with the old count is refused, with the fix.
    group.stop("retrieval-0")
    with pytest.raises(StartupError, match="start it with --shard-count 3"):
        start_retrieval_shard(group, layout, 0, shard_count=2)
    restarted = start_retrieval_shard(group, layout, 0, shard_count=3)
    async with grpc.aio.insecure_channel(restarted.address) as channel:
        stats = await rt_grpc.RetrievalServiceStub(channel).GetStats(rt.GetStatsRequest(), timeout=10)
    owned = sum(1 for i in ids if shard_for(i, 3) == 0)
    assert (stats.shard_index, stats.shard_count, stats.item_count) == (0, 3, owned)


def test_migrating_a_modulo_index_while_shrinking_from_three_to_two_shards(tmp_path):
    """Shards written before placement was recorded (modulo) move to jump placement by the same procedure,
    here while the third shard is emptied and retired."""
    from retrieval_service.index import VectorIndex
    from retrieval_service.reshard import reshard
    from retrieval_service.store import IndexStore

    layout = SystemLayout(state_dir=tmp_path, bundle_dir=tmp_path, shards=3, retrieval_port=0, dimension=DIM,
                          extra_args={f"retrieval-{i}": ["--exact-scan-threshold", "100000"] for i in range(3)})
    rng = np.random.default_rng(5)
    ids = [f"legacy-{i}" for i in range(900)]
    vectors = dict(zip(ids, rng.standard_normal((len(ids), DIM)).astype(np.float32)))
    for shard in range(3):  # as lmrec wrote them before: modulo placement, no placement.json
        mine = [i for i in ids if shard_for(i, 3, "modulo") == shard]
        store = IndexStore(VectorIndex(DIM), tmp_path / f"retrieval-{DIM}d-{shard}")
        store.upsert(mine, np.stack([vectors[i] for i in mine]), None)
        store.close()
    group = ProcessGroup(tmp_path / "run")
    try:
        addresses = [start_retrieval_shard(group, layout, i).address for i in range(3)]
        map_file = tmp_path / "shard-map.json"
        ShardMap(tuple(addresses), epoch=0).save(map_file)

        async def run() -> dict:
            readers = Readers(map_file, vectors)
            tasks = [asyncio.create_task(readers.run(seed)) for seed in range(2)]
            tasks.append(asyncio.create_task(readers.watch()))
            try:
                report = await reshard(addresses, 3, 2, drain_s=0.5,
                                       switch_readers=lambda m: ShardMap(m.addresses, m.scheme, 1).save(map_file))
                await asyncio.sleep(0.2)
            finally:
                readers.stop.set()
                await asyncio.gather(*tasks)
                await readers.close()
            assert not readers.errors and not readers.lost
            assert readers.searches_by_epoch.get(0, 0) > 10 and readers.searches_by_epoch.get(1, 0) > 10
            states = []
            for address in addresses:
                async with grpc.aio.insecure_channel(address) as channel:
                    states.append(await PlacementAdminClient(channel).get(10, count_misplaced=True))
            return report, states

        report, states = asyncio.run(run())
        assert report.from_placement == "modulo/3" and report.to_placement == "jump/2"
        moving = sum(1 for i in ids if shard_for(i, 3, "modulo") != shard_for(i, 2))
        assert report.moved == report.deleted_from_old == moving
        assert [s.item_count for s in states] == [sum(1 for i in ids if shard_for(i, 2) == n) for n in (0, 1)] + [0]
        assert all(s.placement == Placement(2) and s.misplaced == 0 and s.moving_from is None for s in states)
    finally:
        group.stop_all()
