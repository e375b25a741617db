"""Which retrieval shard owns an item, and what readers need to follow a change of shard count.

Placement is jump consistent hashing (Lamping & Veach, 2014, arXiv:1406.2294) of a blake2b-64 key of the
UTF-8 item id: the same in every process and language (Python's hash() is salted per process), and
growing from N to M shards moves only the items that land on the new shards, (M - N) / M of them, where
modulo placement moved all but about 1/M. How a running system changes its count: `lmrec reshard`
(retrieval_service/reshard.py, README "Resharding").
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

JUMP = "jump"
# Placement before lmrec recorded it in the shard's state (blake2b-64 modulo the count). Shards holding
# such an index keep it, recorded, until `lmrec reshard --from N --to N` moves them to JUMP.
MODULO = "modulo"
SCHEMES = (JUMP, MODULO)

_MASK64 = (1 << 64) - 1


def item_key(item_id: str) -> int:
    """The 64-bit key placement hashes: blake2b with an 8-byte digest of the UTF-8 id, big-endian."""
    return int.from_bytes(hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest(), "big")


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash of a 64-bit key into `buckets` (the paper's reference code, in 64-bit arithmetic)."""
    if buckets < 1:
        raise ValueError("buckets must be >= 1")
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_for(item_id: str, shard_count: int, scheme: str = JUMP) -> int:
    """The shard (0..shard_count-1) that owns `item_id`."""
    if shard_count < 1:
        raise ValueError("shard_count must be >= 1")
    if scheme == JUMP:
        return jump_hash(item_key(item_id), shard_count)
    if scheme == MODULO:
        return item_key(item_id) % shard_count
    raise ValueError(f"unknown placement scheme {scheme!r}; known: {', '.join(SCHEMES)}")


@dataclass(frozen=True)
class Placement:
    """A placement rule: the scheme and the shard count."""

    shard_count: int
    scheme: str = JUMP

    def __post_init__(self) -> None:
        if self.shard_count < 1:
            raise ValueError("shard_count must be >= 1")
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown placement scheme {self.scheme!r}; known: {', '.join(SCHEMES)}")

    def owner(self, item_id: str) -> int:
        return 0 if self.shard_count == 1 else shard_for(item_id, self.shard_count, self.scheme)

    def __str__(self) -> str:
        return f"{self.scheme}/{self.shard_count}"


def moves(item_ids: Iterable[str], old: Placement, new: Placement) -> dict[str, tuple[int, int]]:
    """The items whose owner differs between `old` and `new`: id -> (old owner, new owner)."""
    changed = {}
    for item_id in item_ids:
        before, after = old.owner(item_id), new.owner(item_id)
        if before != after:
            changed[item_id] = (before, after)
    return changed


def merge_shard_results(answers: Iterable[Iterable[tuple[str, float]]], k: int) -> list[tuple[str, float]]:
    """Top-k over shards' (item id, score) answers, each id once (its best score).

    While a reshard moves an item it exists on its old and its new shard for a moment (copied before the
    readers switch, deleted from the old shard after); a merge that kept both would show it twice.
    """
    best: dict[str, float] = {}
    for answer in answers:
        for item_id, score in answer:
            if score > best.get(item_id, float("-inf")):
                best[item_id] = score
    return heapq.nlargest(k, best.items(), key=lambda r: r[1])


@dataclass(frozen=True)
class ShardMap:
    """What readers and writers of the retrieval tier need: the shards' addresses in shard order, how items
    are placed on them, and an epoch that grows with every change. `lmrec reshard --shard-map FILE`
    rewrites the file at the moment readers must switch; a process watching it re-reads it when it changes.
    """

    addresses: tuple[str, ...]
    scheme: str = JUMP
    epoch: int = 0

    def __post_init__(self) -> None:
        if not self.addresses:
            raise ValueError("a shard map needs at least one address")
        Placement(len(self.addresses), self.scheme)  # validates the scheme

    @property
    def placement(self) -> Placement:
        return Placement(len(self.addresses), self.scheme)

    def save(self, path: Path) -> None:
        """Writes atomically (temporary file, fsync, rename), so a reader never sees half a map."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"addresses": list(self.addresses), "scheme": self.scheme, "epoch": self.epoch}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ShardMap:
        """Raises ValueError naming the file when it is not a shard map."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(tuple(data["addresses"]), data.get("scheme", JUMP), int(data.get("epoch", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} is not a shard map: {exc}") from None
