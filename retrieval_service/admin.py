"""Placement control of a retrieval shard for `lmrec reshard`: read and change which items it owns, export
the items a move takes elsewhere, drop them once readers have switched.

Served beside `lmrec.v1.RetrievalService` on the same port as `lmrec.admin.RetrievalPlacement`, with
`google.protobuf.Struct` requests and replies (export pages are `lmrec.v1.UpsertRequest`s, ready to send
to the new owner). It is an operator's interface, not part of the public contract in protos/; these four
methods belong in `retrieval_service.proto` once that can change (docs: README "Resharding").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from google.protobuf import json_format, struct_pb2

from lmrec.errors import InvalidArgument
from lmrec.sharding import JUMP, Placement
from lmrec.v1 import common_pb2, retrieval_service_pb2 as rt
from retrieval_service.placement import ShardPlacement
from retrieval_service.store import IndexStore

SERVICE = "lmrec.admin.RetrievalPlacement"
MAX_EXPORT_PAGE = 10_000


def _struct(values: dict) -> struct_pb2.Struct:
    reply = struct_pb2.Struct()
    reply.update(values)
    return reply


def _placement_reply(store: IndexStore, count_misplaced: bool) -> struct_pb2.Struct:
    placement = store.placement or ShardPlacement(0, Placement(1))
    moving = placement.moving_from
    values = {
        "shard_index": placement.shard_index,
        "shard_count": placement.placement.shard_count,
        "scheme": placement.placement.scheme,
        "moving_from_count": moving.shard_count if moving else 0,
        "moving_from_scheme": moving.scheme if moving else "",
        "item_count": len(store.index),
        "dimension": store.index.dimension,
    }
    if count_misplaced or moving is not None:
        values["misplaced"] = len(store.misplaced_ids())
    return _struct(values)


def _int(request: struct_pb2.Struct, name: str, default: int, low: int, high: int) -> int:
    value = request.fields.get(name)
    if value is None:
        return default
    number = value.number_value
    if value.WhichOneof("kind") != "number_value" or number != int(number) or not low <= number <= high:
        raise InvalidArgument(name, f"must be an integer in {low}..{high}")
    return int(number)


class PlacementAdmin:
    """The four methods, over an `IndexStore`; blocking work runs off the event loop."""

    def __init__(self, store: IndexStore) -> None:
        self._store = store

    async def GetPlacement(self, request: struct_pb2.Struct, context) -> struct_pb2.Struct:
        count = bool(request.fields["count_misplaced"].bool_value) if "count_misplaced" in request.fields else False
        return await asyncio.to_thread(_placement_reply, self._store, count)

    async def SetPlacement(self, request: struct_pb2.Struct, context) -> struct_pb2.Struct:
        scheme = request.fields["scheme"].string_value if "scheme" in request.fields else JUMP
        if scheme != JUMP:
            raise InvalidArgument("scheme", f"moves go to {JUMP} placement only, got {scheme!r}")
        count = _int(request, "shard_count", 0, 1, 4096)
        if count == 0:
            raise InvalidArgument("shard_count", "required")
        await asyncio.to_thread(self._store.set_placement, Placement(count, scheme))
        return await asyncio.to_thread(_placement_reply, self._store, False)

    async def ExportMisplaced(self, request: struct_pb2.Struct, context) -> rt.UpsertRequest:
        offset = _int(request, "offset", 0, 0, 2**40)
        limit = _int(request, "limit", 512, 1, MAX_EXPORT_PAGE)

        def page() -> rt.UpsertRequest:
            ids = self._store.misplaced_ids()[offset: offset + limit]
            found, vectors, attributes = self._store.export(ids)
            return rt.UpsertRequest(items=[
                rt.IndexedItem(item_id=item_id, vector=vector.tolist(), attributes={
                    k: common_pb2.AttributeValues(values=v) for k, v in (attrs or {}).items()})
                for item_id, vector, attrs in zip(found, vectors, attributes)])

        return await asyncio.to_thread(page)

    async def DropMisplaced(self, request: struct_pb2.Struct, context) -> struct_pb2.Struct:
        deleted = await asyncio.to_thread(self._store.drop_misplaced)
        reply = await asyncio.to_thread(_placement_reply, self._store, False)
        reply.update({"deleted": deleted})
        return reply


_METHODS: dict[str, tuple[type, type]] = {
    "GetPlacement": (struct_pb2.Struct, struct_pb2.Struct),
    "SetPlacement": (struct_pb2.Struct, struct_pb2.Struct),
    "ExportMisplaced": (struct_pb2.Struct, rt.UpsertRequest),
    "DropMisplaced": (struct_pb2.Struct, struct_pb2.Struct),
}


def add_to_server(server: grpc.aio.Server, store: IndexStore) -> None:
    admin = PlacementAdmin(store)
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(getattr(admin, name), request_deserializer=req.FromString,
                                                  response_serializer=resp.SerializeToString)
        for name, (req, resp) in _METHODS.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@dataclass(frozen=True)
class ShardState:
    """A shard's answer to GetPlacement."""

    shard_index: int
    placement: Placement
    moving_from: Placement | None
    item_count: int
    dimension: int
    misplaced: int | None

    @classmethod
    def from_struct(cls, reply: struct_pb2.Struct) -> ShardState:
        d = json_format.MessageToDict(reply)
        moving = Placement(int(d["moving_from_count"]), d["moving_from_scheme"]) if d.get("moving_from_count") else None
        misplaced = int(d["misplaced"]) if "misplaced" in d else None
        return cls(int(d["shard_index"]), Placement(int(d["shard_count"]), d["scheme"]), moving,
                   int(d["item_count"]), int(d["dimension"]), misplaced)


class PlacementAdminClient:
    """Calls a shard's placement methods over an aio channel the caller owns."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        def method(name: str) -> Callable[..., Awaitable]:
            req, resp = _METHODS[name]
            return channel.unary_unary(f"/{SERVICE}/{name}", request_serializer=req.SerializeToString,
                                       response_deserializer=resp.FromString)

        self._get, self._set = method("GetPlacement"), method("SetPlacement")
        self._export, self._drop = method("ExportMisplaced"), method("DropMisplaced")

    async def get(self, timeout: float, count_misplaced: bool = False) -> ShardState:
        return ShardState.from_struct(await self._get(_struct({"count_misplaced": count_misplaced}), timeout=timeout))

    async def set(self, placement: Placement, timeout: float) -> ShardState:
        request = _struct({"shard_count": placement.shard_count, "scheme": placement.scheme})
        return ShardState.from_struct(await self._set(request, timeout=timeout))

    async def export_page(self, offset: int, limit: int, timeout: float) -> rt.UpsertRequest:
        return await self._export(_struct({"offset": offset, "limit": limit}), timeout=timeout)

    async def drop(self, timeout: float) -> tuple[ShardState, int]:
        reply = await self._drop(_struct({}), timeout=timeout)
        return ShardState.from_struct(reply), int(reply.fields["deleted"].number_value)
