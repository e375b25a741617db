"""Which retrieval shard owns an item: a stable hash, the same in every process and language."""

from __future__ import annotations

import hashlib


def shard_for(item_id: str, shard_count: int) -> int:
    """blake2b-64 of the UTF-8 id, modulo the shard count (Python's hash() is salted per process)."""
    if shard_count < 1:
        raise ValueError("shard_count must be >= 1")
    digest = hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shard_count
