"""The retrieval server over real gRPC on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lmrec.sharding import shard_for
from lmrec.v1 import common_pb2, retrieval_service_pb2 as pb, retrieval_service_pb2_grpc
from retrieval_service.index import VectorIndex
from retrieval_service.server import SERVICE_NAME, create_server
from retrieval_service.settings import RetrievalSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

DIM = 8


@contextlib.asynccontextmanager
async def running(**settings_fields):
    settings = RetrievalSettings(port=0, dimension=DIM, exact_scan_threshold=50, initial_capacity=64, **settings_fields)
    listening = create_server(settings, VectorIndex.from_settings(settings))
    server, port, health = listening.server, listening.port, listening.health
    await server.start()
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield retrieval_service_pb2_grpc.RetrievalServiceStub(channel), channel
    finally:
        await channel.close()
        await server.stop(0)


def items(ids, rng, attrs=None):
    vectors = rng.standard_normal((len(ids), DIM)).astype(np.float32)
    out = []
    for n, (item_id, vector) in enumerate(zip(ids, vectors)):
        attributes = {k: common_pb2.AttributeValues(values=v) for k, v in (attrs[n] if attrs else {}).items()}
        out.append(pb.IndexedItem(item_id=item_id, vector=vector.tolist(), attributes=attributes))
    return out, vectors


async def expect_code(call, code, field=None):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    if field is not None:
        assert field in info.value.details()
    assert "Traceback" not in (info.value.details() or "")


def test_search_upsert_delete_stats_and_health():
    async def scenario():
        rng = np.random.default_rng(1)
        async with running() as (stub, channel):
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

            ids = [f"item-{i}" for i in range(200)]
            attrs = [{"genre": ["comedy" if i % 10 == 0 else "drama", "all"]} for i in range(200)]
            batch, vectors = items(ids, rng, attrs)
            assert (await stub.Upsert(pb.UpsertRequest(items=batch))).upserted_count == 200

            reply = await stub.Search(pb.SearchRequest(query_vector=vectors[7].tolist(), k=5))
            assert reply.plan == "hnsw"
            assert reply.results[0].item_id == "item-7"
            assert reply.results[0].score == pytest.approx(1.0, abs=1e-5)
            assert [r.score for r in reply.results] == sorted((r.score for r in reply.results), reverse=True)

            comedy = pb.SearchRequest(
                query_vector=vectors[7].tolist(),
                k=30,
                filters=[common_pb2.AttributeFilter(key="genre", values=["comedy"])],
            )
            reply = await stub.Search(comedy)
            assert reply.plan == "exact"  # 20 eligible, under the threshold of 50
            assert len(reply.results) == 20
            assert all(int(r.item_id.split("-")[1]) % 10 == 0 for r in reply.results)

            # "More like these": mean of known items' vectors; unknown ids ignored.
            reply = await stub.Search(pb.SearchRequest(query_item_ids=["item-3", "nope"], k=1))
            assert reply.results[0].item_id == "item-3"
            reply = await stub.Search(pb.SearchRequest(query_item_ids=["nope"], k=3))
            assert reply.plan == "none" and not reply.results

            assert (await stub.Delete(pb.DeleteRequest(item_ids=["item-7", "item-7", "ghost"]))).deleted_count == 1
            reply = await stub.Search(pb.SearchRequest(query_vector=vectors[7].tolist(), k=5))
            assert "item-7" not in [r.item_id for r in reply.results]

            stats = await stub.GetStats(pb.GetStatsRequest())
            assert stats.item_count == 199
            assert stats.dimension == DIM
            assert stats.capacity >= 200
            assert stats.tombstone_count == 1
            assert stats.metric == "cosine"
            assert (stats.shard_index, stats.shard_count) == (0, 1)
            assert stats.wal_records == 0  # in-memory store

    asyncio.run(scenario())


def test_invalid_arguments_name_the_field():
    async def scenario():
        async with running() as (stub, _):
            good = [1.0] * DIM
            invalid = grpc.StatusCode.INVALID_ARGUMENT
            await expect_code(stub.Search(pb.SearchRequest(query_vector=good, k=0)), invalid, "k")
            await expect_code(stub.Search(pb.SearchRequest(query_vector=good, k=10_001)), invalid, "k")
            await expect_code(stub.Search(pb.SearchRequest(query_vector=[1.0] * 3, k=1)), invalid, "query_vector")
            nan = [float("nan")] + [1.0] * (DIM - 1)
            await expect_code(stub.Search(pb.SearchRequest(query_vector=nan, k=1)), invalid, "query_vector")
            await expect_code(stub.Search(pb.SearchRequest(query_vector=[0.0] * DIM, k=1)), invalid, "query_vector")
            await expect_code(stub.Search(pb.SearchRequest(k=1)), invalid, "query_vector")
            await expect_code(stub.Search(pb.SearchRequest(query_vector=good, k=1, ef=-1)), invalid, "ef")
            await expect_code(
                stub.Search(pb.SearchRequest(query_vector=good, k=1, exclude_item_ids=[""])), invalid, "exclude_item_ids[0]"
            )
            empty_filter = common_pb2.AttributeFilter(key="genre")
            await expect_code(
                stub.Search(pb.SearchRequest(query_vector=good, k=1, filters=[empty_filter])), invalid, "filters[0].values"
            )
            await expect_code(stub.Upsert(pb.UpsertRequest()), invalid, "items")
            await expect_code(
                stub.Upsert(pb.UpsertRequest(items=[pb.IndexedItem(item_id="", vector=good)])), invalid, "items[0].item_id"
            )
            await expect_code(
                stub.Upsert(pb.UpsertRequest(items=[pb.IndexedItem(item_id="a", vector=nan)])), invalid, "items[0].vector"
            )
            await expect_code(stub.Delete(pb.DeleteRequest()), invalid, "item_ids")
            await expect_code(stub.Delete(pb.DeleteRequest(item_ids=["x" * 300])), invalid, "item_ids[0]")
            too_many = pb.SearchRequest(query_vector=good, k=1, exclude_item_ids=[f"i{i}" for i in range(20_001)])
            await expect_code(stub.Search(too_many), invalid, "exclude_item_ids")

    asyncio.run(scenario())


def test_search_clamps_ef_and_handles_empty_index():
    async def scenario():
        async with running() as (stub, _):
            reply = await stub.Search(pb.SearchRequest(query_vector=[1.0] * DIM, k=10, ef=10**9))
            assert not reply.results
            batch, vectors = items([f"i{i}" for i in range(100)], np.random.default_rng(2))
            await stub.Upsert(pb.UpsertRequest(items=batch))
            for ef in (1, 0, 10**9):
                reply = await stub.Search(pb.SearchRequest(query_vector=vectors[0].tolist(), k=100, ef=ef))
                assert len(reply.results) == 100

    asyncio.run(scenario())


def test_upsert_of_another_shards_item_is_refused():
    async def scenario():
        async with running(shard_index=1, shard_count=3) as (stub, _):
            rng = np.random.default_rng(3)
            ids = [f"item-{i}" for i in range(60)]
            mine = [i for i in ids if shard_for(i, 3) == 1]
            theirs = [i for i in ids if shard_for(i, 3) != 1]
            batch, _ = items(mine, rng)
            assert (await stub.Upsert(pb.UpsertRequest(items=batch))).upserted_count == len(mine)
            batch, _ = items(mine[:1] + theirs[:1], rng)
            await expect_code(stub.Upsert(pb.UpsertRequest(items=batch)), grpc.StatusCode.FAILED_PRECONDITION, theirs[0])
            stats = await stub.GetStats(pb.GetStatsRequest())
            assert (stats.shard_index, stats.shard_count, stats.item_count) == (1, 3, len(mine))

    asyncio.run(scenario())


def test_searches_run_while_writes_stream_in():
    async def scenario():
        rng = np.random.default_rng(4)
        async with running() as (stub, _):
            batch, vectors = items([f"base-{i}" for i in range(500)], rng)
            await stub.Upsert(pb.UpsertRequest(items=batch))

            async def writer():
                for round_ in range(20):
                    batch, _ = items([f"w{round_}-{i}" for i in range(50)], rng)
                    await stub.Upsert(pb.UpsertRequest(items=batch))
                    await stub.Delete(pb.DeleteRequest(item_ids=[f"w{round_}-{i}" for i in range(0, 50, 2)]))

            async def reader():
                for i in range(100):
                    reply = await stub.Search(pb.SearchRequest(query_vector=vectors[i % 500].tolist(), k=10))
                    assert len(reply.results) == 10
                    assert reply.results[0].item_id == f"base-{i % 500}"

            await asyncio.gather(writer(), reader(), reader())
            stats = await stub.GetStats(pb.GetStatsRequest())
            assert stats.item_count == 500 + 20 * 25

    asyncio.run(scenario())
