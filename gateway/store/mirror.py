"""The in-memory copy of the catalogue and of item popularity that every request reads.

Replaced, never mutated: a change builds new mappings and swaps them in, so a reader on any thread (the
event loop, a database worker, the replica sync) iterates a consistent snapshot. Each item and each
popularity count carries the version of the write that produced it, and an older version never
overwrites a newer one: a replica's own write and the sync that reads it back may arrive in any order.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping

from lmrec.catalog import CatalogItem


class Mirror:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.catalog: Mapping[str, CatalogItem] = {}
        self.popularity: Counter[str] = Counter()
        # Bumped by every catalogue change: what is derived from the catalogue knows when to rebuild.
        self.catalog_version = 0
        self._item_versions: dict[str, int] = {}
        self._count_versions: dict[str, int] = {}

    def apply_items(self, upserted: Iterable[tuple[CatalogItem, int]] = (),
                    deleted: Iterable[tuple[str, int]] = ()) -> int:
        """Applies items written and ids deleted at the given versions; returns how many changed."""
        with self._lock:
            catalog, changed = dict(self.catalog), 0
            for item, version in upserted:
                if self._newer(self._item_versions, item.item_id, version):
                    catalog[item.item_id] = item
                    changed += 1
            for item_id, version in deleted:
                if self._newer(self._item_versions, item_id, version):
                    changed += catalog.pop(item_id, None) is not None
            if changed:
                self.catalog = catalog
                self.catalog_version += 1
            return changed

    def set_counts(self, counts: Iterable[tuple[str, int, int]]) -> None:
        """(item_id, users, version): absolute popularity counts as the database holds them."""
        with self._lock:
            popularity = Counter(self.popularity)
            for item_id, users, version in counts:
                if self._newer(self._count_versions, item_id, version):
                    if users > 0:
                        popularity[item_id] = users
                    else:
                        popularity.pop(item_id, None)
            self.popularity = popularity

    def add_counts(self, deltas: Mapping[str, int]) -> None:
        """Relative changes, for a store that is the only writer (the embedded SQLite one)."""
        if not deltas:
            return
        with self._lock:
            popularity = Counter(self.popularity)
            for item_id, delta in deltas.items():
                popularity[item_id] += delta
                if popularity[item_id] <= 0:
                    del popularity[item_id]
            self.popularity = popularity

    @staticmethod
    def _newer(versions: dict[str, int], key: str, version: int) -> bool:
        if version < versions.get(key, -1):
            return False
        versions[key] = version
        return True


class Mirrored:
    """What a store built on a Mirror (in `self._mirror`) shows every request."""

    _mirror: Mirror

    @property
    def catalog(self) -> Mapping[str, CatalogItem]:
        return self._mirror.catalog

    @property
    def catalog_version(self) -> int:
        return self._mirror.catalog_version

    @property
    def popularity(self) -> Counter[str]:
        """Users with a positive event, per item (read-only: the store swaps in a new counter)."""
        return self._mirror.popularity
