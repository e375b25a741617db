"""Changes the retrieval tier's shard count while it serves: moves only the items whose owner changes.

    1. check   every shard's recorded placement: shards 0..N-1 at N (or already mid-move to M), new shards
               N..M-1 started at M (`--shard-index i --shard-count M`), all of one vector length.
    2. fence   each shard adopts placement M (durably, `placement.json`): it now refuses writes to the items
               that leave it, so the copy below cannot miss a write, and still serves them to searches.
    3. copy    each shard's leaving items (vector + attributes) are upserted into their new owners.
    4. switch  readers and writers get the M-shard map (`switch_readers`, e.g. a shard map file the gateway
               watches), then `drain_s` passes so calls planned on the old map finish.
    5. drop    each shard deletes the items that left and records placement M as settled.

No item is missing from a search at any point: until the switch, readers ask the old shards, which hold
every item; from the switch on they ask all M shards, and each item is on its new owner (copied in step
3, acknowledged durable). Between 3 and 5 a moved item is on two shards, so readers de-duplicate
(`lmrec.sharding.merge_shard_results`). Every step is idempotent: after a crash, run it again. Writes to
moving items are refused (FAILED_PRECONDITION) from the fence until the writer switches maps.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field

import grpc

from lmrec.errors import FailedPrecondition
from lmrec.sharding import JUMP, Placement, ShardMap
from lmrec.v1 import retrieval_service_pb2 as rt, retrieval_service_pb2_grpc as rt_grpc
from retrieval_service.admin import PlacementAdminClient, ShardState

CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024),
                   ("grpc.max_send_message_length", 64 * 1024 * 1024)]


class ReshardError(FailedPrecondition):
    """The shards are not in a state this reshard can start from (the message says which and why)."""


@dataclass
class ReshardReport:
    from_placement: str
    to_placement: str
    items_before: int = 0
    moved: int = 0
    deleted_from_old: int = 0
    items_after: int = 0
    per_shard_before: list[int] = field(default_factory=list)
    per_shard_after: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def moved_share(self) -> float:
        return self.moved / self.items_before if self.items_before else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "moved_share": round(self.moved_share, 4),
                "seconds": {phase: round(s, 3) for phase, s in self.seconds.items()}}


class _Shard:
    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.admin = PlacementAdminClient(self.channel)
        self.stub = rt_grpc.RetrievalServiceStub(self.channel)


def check_start(states: Sequence[ShardState], from_count: int, to_count: int) -> Placement:
    """Validates the shards' placements before a move from `from_count` to `to_count` shards (jump placement);
    returns the placement they are moving from. Pure, for tests.

    Raises:
        ReshardError: naming the shard whose state does not fit.
    """
    target = Placement(to_count, JUMP)
    if len(states) != max(from_count, to_count):
        raise ReshardError(f"need the addresses of shards 0..{max(from_count, to_count) - 1}, got {len(states)}")
    schemes = set()
    for i, s in enumerate(states):
        where = f"shard {i}"
        if s.shard_index != i:
            raise ReshardError(f"{where} reports shard index {s.shard_index}: list the shards in shard order")
        if s.dimension != states[0].dimension:
            raise ReshardError(f"{where} holds {s.dimension}-d vectors, shard 0 {states[0].dimension}-d")
        if i < from_count:
            if s.placement == target:  # a move that a previous run fenced (or finished)
                if s.moving_from is not None:
                    schemes.add(s.moving_from.scheme)
                continue
            if s.moving_from is not None:
                raise ReshardError(f"{where} is moving from {s.moving_from} to {s.placement}, not to {target}; "
                                   f"finish that move first (lmrec reshard --from {s.moving_from.shard_count} "
                                   f"--to {s.placement.shard_count})")
            if s.placement.shard_count != from_count:
                raise ReshardError(f"{where} is placed as {s.placement}, not one of {from_count} shards")
            schemes.add(s.placement.scheme)
        elif s.placement != target:
            raise ReshardError(f"new {where} is placed as {s.placement}; start it with --shard-index {i} "
                               f"--shard-count {to_count}")
    if len(schemes) > 1:
        raise ReshardError(f"the shards mix placement schemes {sorted(schemes)}; each shard must move from the same")
    source = Placement(from_count, schemes.pop() if schemes else JUMP)
    return source


async def reshard(addresses: Sequence[str], from_count: int, to_count: int, *,
                  switch_readers: Callable[[ShardMap], Awaitable[None] | None] | None,
                  drain_s: float = 5.0, batch: int = 512, timeout_s: float = 120.0,
                  steps: Sequence[str] = ("copy", "switch", "drop"),
                  progress: Callable[[str], None] = lambda message: None) -> ReshardReport:
    """Moves the retrieval tier from `from_count` to `to_count` shards (see the module docstring).

    Args:
        addresses: shards 0..max(from_count, to_count)-1 in shard order; new shards already started.
        switch_readers: called with the new shard map between copy and drop (None with steps that skip it).
        drain_s: wait after the switch before old shards delete what moved.
        batch: items per export page and per upsert.
        steps: "copy" (check, fence, copy), "switch", "drop"; an operator who switches readers by hand runs
            copy, switches, then drop.

    Raises:
        ReshardError: the shards are in a state this move cannot start from.
        grpc.aio.AioRpcError: a shard failed; nothing is lost, run it again.
    """
    started = time.monotonic()
    shards = [_Shard(a) for a in addresses]
    target = Placement(to_count, JUMP)
    try:
        states = list(await asyncio.gather(*(s.admin.get(timeout_s) for s in shards)))
        source = check_start(states, from_count, to_count)
        report = ReshardReport(str(source), str(target), per_shard_before=[s.item_count for s in states])
        # Items a previous, interrupted run already copied are on two shards: count each once.
        report.items_before = sum(s.item_count for s in states) - sum(
            (s.misplaced or 0) for s in states if s.moving_from is not None)
        report.seconds["check"] = time.monotonic() - started

        if "copy" in steps:
            mark = time.monotonic()
            for shard in shards:
                await shard.admin.set(target, timeout_s)
            report.seconds["fence"] = time.monotonic() - mark
            progress(f"fenced: every shard owns by {target}")
            mark = time.monotonic()
            for i, shard in enumerate(shards):
                copied = await _copy_leaving(shard, shards, target, batch, timeout_s)
                report.moved += copied
                progress(f"shard {i}: {copied} items copied to their new owners")
            report.seconds["copy"] = time.monotonic() - mark

        if "switch" in steps:
            if switch_readers is None:
                raise ValueError("the switch step needs switch_readers")
            mark = time.monotonic()
            outcome = switch_readers(ShardMap(tuple(addresses[:to_count]), JUMP))
            if inspect.isawaitable(outcome):
                await outcome
            progress(f"readers switched to {to_count} shards; draining {drain_s:.1f}s")
            await asyncio.sleep(drain_s)
            report.seconds["switch"] = time.monotonic() - mark

        if "drop" in steps:
            mark = time.monotonic()
            for i, shard in enumerate(shards):
                _, deleted = await shard.admin.drop(timeout_s)
                report.deleted_from_old += deleted
                if deleted:
                    progress(f"shard {i}: {deleted} moved items deleted")
            report.seconds["drop"] = time.monotonic() - mark

        final = await asyncio.gather(*(s.admin.get(timeout_s) for s in shards))
        report.per_shard_after = [s.item_count for s in final]
        report.items_after = sum(report.per_shard_after)
        report.seconds["total"] = time.monotonic() - started
        return report
    finally:
        for shard in shards:
            await shard.channel.close()


async def _copy_leaving(source: _Shard, shards: Sequence[_Shard], target: Placement, batch: int,
                        timeout_s: float) -> int:
    """Pages through `source`'s leaving items and upserts each into its owner under `target`."""
    copied, offset = 0, 0
    while True:
        page = await source.admin.export_page(offset, batch, timeout_s)
        if not page.items:
            return copied
        offset += len(page.items)
        by_owner: dict[int, list[rt.IndexedItem]] = defaultdict(list)
        for item in page.items:
            by_owner[target.owner(item.item_id)].append(item)
        await asyncio.gather(*(shards[owner].stub.Upsert(rt.UpsertRequest(items=items), timeout=timeout_s)
                               for owner, items in by_owner.items()))
        copied += len(page.items)
