"""Clients of the ranking tier and the retrieval shards, over long-lived channels.

Every call takes an explicit timeout: Python gRPC does not propagate the caller's deadline, so the
gateway hands each stage the time left in the request's one budget. With tracing on, every call carries the
current span's trace context (lmrec/tracing.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from lmrec import tracing
from lmrec.errors import DependencyUnavailable, InvalidArgument, LmrecError
from lmrec.sharding import ShardMap, merge_shard_results
from lmrec.tls import ClientTls, channel as tls_channel
from lmrec.v1 import common_pb2, ranking_service_pb2 as rk, ranking_service_pb2_grpc as rk_grpc
from lmrec.v1 import retrieval_service_pb2 as rt, retrieval_service_pb2_grpc as rt_grpc

log = logging.getLogger(__name__)

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.enable_retries", 1),
]


def describe_rpc_error(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


def as_lmrec_error(what: str, exc: grpc.aio.AioRpcError) -> LmrecError:
    """A downstream refusal of our input stays INVALID_ARGUMENT; anything else means the dependency failed."""
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(what, exc.details() or "rejected")
    return DependencyUnavailable(f"{what} failed: {describe_rpc_error(exc)}")


@dataclass(frozen=True)
class EncodedItems:
    vectors: list[list[float]]
    model_version: str  # the model that made them: mid-swap, replicas may answer from two versions


class RankingClient:
    def __init__(self, address: str, tls: ClientTls | None = None) -> None:
        self.address = address
        self._channel = tls_channel(address, tls, CHANNEL_OPTIONS, tracing.client_interceptors())
        self._stub = rk_grpc.RankingServiceStub(self._channel)

    async def encode_items(self, items: Sequence[tuple[str, str]], timeout: float) -> EncodedItems:
        request = rk.EncodeRequest(inputs=[rk.EncodeInput(item_id=i, text=t) for i, t in items])
        response = await self._stub.Encode(request, timeout=timeout)
        return EncodedItems([list(vec.values) for vec in response.vectors], response.model_version)

    async def encode_context(self, context: common_pb2.UserContext, timeout: float) -> rk.EncodeContextResponse:
        return await self._stub.EncodeContext(rk.EncodeContextRequest(context=context), timeout=timeout)

    async def rank(self, context: common_pb2.UserContext, candidates: Sequence[str], timeout: float,
                   explain: bool = False, vectors_for_top: int = 0) -> rk.RankResponse:
        return await self._stub.Rank(rk.RankRequest(context=context, candidate_item_ids=candidates, explain=explain,
                                                    vectors_for_top=vectors_for_top), timeout=timeout)

    async def forget(self, item_ids: Sequence[str], timeout: float) -> None:
        await self._stub.ForgetItems(rk.ForgetItemsRequest(item_ids=item_ids), timeout=timeout)

    async def model_info(self, timeout: float) -> rk.GetModelInfoResponse:
        return await self._stub.GetModelInfo(rk.GetModelInfoRequest(), timeout=timeout)

    async def close(self) -> None:
        await self._channel.close()


@dataclass
class ShardedResult:
    results: list[tuple[str, float]]
    failed_shards: list[str]


@dataclass(frozen=True)
class _Shards:
    """One consistent view of the retrieval tier: a call reads it once, so a switch never mixes maps."""

    shard_map: ShardMap
    channels: list[grpc.aio.Channel]
    stubs: list[rt_grpc.RetrievalServiceStub]

    @classmethod
    def connect(cls, shard_map: ShardMap, tls: ClientTls | None = None) -> _Shards:
        channels = [tls_channel(a, tls, CHANNEL_OPTIONS, tracing.client_interceptors()) for a in shard_map.addresses]
        return cls(shard_map, channels, [rt_grpc.RetrievalServiceStub(c) for c in channels])


class ShardedRetrievalClient:
    """Scatter-gather over retrieval shards; item writes go to the shard that owns the item.

    With a shard map file (`lmrec reshard --shard-map`), `watch` re-reads it and switches to a map with a
    higher epoch: calls in flight finish on the old channels, which close after `CLOSE_AFTER_S`.
    """

    CLOSE_AFTER_S = 30.0

    def __init__(self, addresses: Sequence[str] | ShardMap, tls: ClientTls | None = None) -> None:
        shard_map = addresses if isinstance(addresses, ShardMap) else ShardMap(tuple(addresses))
        self._tls = tls
        self._shards = _Shards.connect(shard_map, tls)
        self._retired: set[asyncio.Task] = set()

    @property
    def addresses(self) -> list[str]:
        return list(self._shards.shard_map.addresses)

    @property
    def shard_count(self) -> int:
        return len(self._shards.stubs)

    def switch(self, shard_map: ShardMap) -> None:
        old, self._shards = self._shards, _Shards.connect(shard_map, self._tls)
        log.info("retrieval shard map epoch %d: %s", shard_map.epoch, ", ".join(shard_map.addresses))
        task = asyncio.get_running_loop().create_task(self._close_later(old.channels))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def _close_later(self, channels: list[grpc.aio.Channel]) -> None:
        await asyncio.sleep(self.CLOSE_AFTER_S)
        for channel in channels:
            await channel.close()

    async def watch(self, path: Path, interval_s: float) -> None:
        """Switches to the file's map whenever its epoch grows; an unreadable file is logged and kept
        polling (the current map keeps serving)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                shard_map = await asyncio.to_thread(ShardMap.load, path)
            except (OSError, ValueError) as exc:
                log.warning("shard map %s not read: %s", path, exc)
                continue
            if shard_map.epoch > self._shards.shard_map.epoch:
                self.switch(shard_map)

    async def search(self, request: rt.SearchRequest, timeout: float) -> ShardedResult:
        """Top-k merged over shards. Missing shards are reported; all missing raises UNAVAILABLE."""
        shards = self._shards
        calls = [stub.Search(request, timeout=timeout) for stub in shards.stubs]
        answers = await asyncio.gather(*calls, return_exceptions=True)
        per_shard, failed = [], []
        for shard, answer in enumerate(answers):
            if isinstance(answer, grpc.aio.AioRpcError):
                if answer.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise InvalidArgument("request", answer.details() or "rejected by retrieval")
                failed.append(f"shard {shard} ({answer.code().name})")
                continue
            if isinstance(answer, BaseException):
                raise answer
            per_shard.append([(r.item_id, r.score) for r in answer.results])
        if len(failed) == len(shards.stubs):
            raise DependencyUnavailable(f"retrieval unavailable: {', '.join(failed)}")
        # De-duplicated: an item being resharded is on two shards for a moment.
        return ShardedResult(merge_shard_results(per_shard, request.k), failed)

    @staticmethod
    def _by_shard(shards: _Shards, item_ids: Sequence[str]) -> dict[int, list[int]]:
        placement = shards.shard_map.placement
        groups: dict[int, list[int]] = defaultdict(list)
        for position, item_id in enumerate(item_ids):
            groups[placement.owner(item_id)].append(position)
        return groups

    async def upsert(self, items: Sequence[rt.IndexedItem], timeout: float) -> None:
        shards = self._shards
        groups = self._by_shard(shards, [i.item_id for i in items])
        await self._all_or_raise("retrieval upsert", [
            shards.stubs[s].Upsert(rt.UpsertRequest(items=[items[p] for p in ps]), timeout=timeout)
            for s, ps in groups.items()])

    async def delete(self, item_ids: Sequence[str], timeout: float) -> int:
        shards = self._shards
        groups = self._by_shard(shards, item_ids)
        answers = await self._all_or_raise("retrieval delete", [
            shards.stubs[s].Delete(rt.DeleteRequest(item_ids=[item_ids[p] for p in ps]), timeout=timeout)
            for s, ps in groups.items()])
        return sum(a.deleted_count for a in answers)

    async def _all_or_raise(self, what: str, calls) -> list:
        # Writes must reach every owning shard: a partial write is reported, and the client retries the
        # whole (idempotent) batch.
        answers = await asyncio.gather(*calls, return_exceptions=True)
        for answer in answers:
            if isinstance(answer, grpc.aio.AioRpcError):
                raise as_lmrec_error(what, answer)
            if isinstance(answer, BaseException):
                raise answer
        return answers

    async def close(self) -> None:
        for task in list(self._retired):
            task.cancel()
        for channel in self._shards.channels:
            await channel.close()
