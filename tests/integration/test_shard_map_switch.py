"""The gateway's retrieval client follows a shard map file (what `lmrec reshard --shard-map` rewrites):
a higher epoch switches it while serving, a bad file never interrupts it."""

from __future__ import annotations

import asyncio

import pytest

from gateway.downstream import ShardedRetrievalClient
from lmrec.sharding import ShardMap
from lmrec_tools.supervisor import ProcessGroup, SystemLayout, start_retrieval_shard
from lmrec.v1 import retrieval_service_pb2 as rt

DIM = 8


@pytest.fixture
def two_indexes(tmp_path):
    """Two independent one-shard retrieval services, each holding its own item."""
    groups, addresses = [], []
    for name in ("a", "b"):
        layout = SystemLayout(state_dir=tmp_path / name, bundle_dir=tmp_path, retrieval_port=0, dimension=DIM)
        group = ProcessGroup(tmp_path / name / "run")
        addresses.append(start_retrieval_shard(group, layout, 0).address)
        groups.append(group)
    yield addresses
    for group in groups:
        group.stop_all()


async def _scenario(addresses: list[str], map_path) -> list[list[str]]:
    first = ShardMap((addresses[0],), epoch=0)
    first.save(map_path)
    client = ShardedRetrievalClient(first)
    for address, item in zip(addresses, ("only-in-a", "only-in-b")):
        solo = ShardedRetrievalClient([address])
        await solo.upsert([rt.IndexedItem(item_id=item, vector=[1.0] * DIM)], timeout=10)
        await solo.close()
    watcher = asyncio.create_task(client.watch(map_path, 0.05))
    query = rt.SearchRequest(query_vector=[1.0] * DIM, k=5)
    seen = [[i for i, _ in (await client.search(query, timeout=10)).results]]
    map_path.write_text("not a shard map")  # a half-edited file: keep serving on the current map
    await asyncio.sleep(0.3)
    seen.append([i for i, _ in (await client.search(query, timeout=10)).results])
    ShardMap((addresses[1],), epoch=1).save(map_path)
    await asyncio.sleep(0.5)
    seen.append([i for i, _ in (await client.search(query, timeout=10)).results])
    ShardMap((addresses[0],), epoch=1).save(map_path)  # same epoch: not a newer map
    await asyncio.sleep(0.3)
    seen.append([i for i, _ in (await client.search(query, timeout=10)).results])
    watcher.cancel()
    await client.close()
    return seen


def test_a_newer_shard_map_is_switched_to_while_serving(two_indexes, tmp_path):
    seen = asyncio.run(_scenario(two_indexes, tmp_path / "shards.json"))
    assert seen == [["only-in-a"], ["only-in-a"], ["only-in-b"], ["only-in-b"]]
