"""Per-slot bookkeeping of the retrieval index in numpy arrays instead of one Python object per item.

At 1M items a dict of id strings, sets of labels per attribute value and a list of ids cost ~700 bytes
an item; these tables cost ~30 (the id bytes, two 8-byte hash-table columns, a 4-byte attribute
combination number and a live flag).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

# Recently added ids wait in a dict until there are this many (or 1/16 of the table), then merge into
# the sorted columns: amortised O(1) per insert, lookups stay a binary search.
_MERGE_AT = 4_096


class IdTable:
    """Slot <-> item id. Ids are kept as UTF-8 in one fixed-width bytes array (widened when a longer id
    arrives); the reverse map is a sorted column of 64-bit string hashes with the slot beside each.

    Hashes come from Python's `hash`, which differs between processes: the table is rebuilt from the ids
    on load, never persisted. Two ids with the same hash are both served: the later one goes to a small
    dict of collisions.
    """

    def __init__(self, capacity: int) -> None:
        self.names = np.zeros(capacity, dtype="S8")
        self._keys = np.empty(0, dtype=np.int64)
        self._slots = np.empty(0, dtype=np.int64)  # -1: the id that had this hash is gone
        self._recent: dict[int, int] = {}
        self._collisions: dict[str, int] = {}
        self.count = 0

    def grow(self, capacity: int) -> None:
        names = np.zeros(capacity, dtype=self.names.dtype)
        names[: len(self.names)] = self.names
        self.names = names

    def id_at(self, slot: int) -> str:
        return self.names[slot].decode("utf-8")

    def ids_at(self, slots: Sequence[int] | np.ndarray) -> list[str]:
        return [name.decode("utf-8") for name in self.names[slots].tolist()]

    def _find_hash(self, h: int) -> tuple[int, int]:
        """(slot or -1, position in the sorted columns or -1 when the hash is only in `_recent` or absent)."""
        slot = self._recent.get(h)
        if slot is not None:
            return slot, -1
        pos = int(np.searchsorted(self._keys, h))
        if pos < len(self._keys) and self._keys[pos] == h:
            return int(self._slots[pos]), pos
        return -1, -1

    def get(self, item_id: str) -> int | None:
        if self._collisions:
            slot = self._collisions.get(item_id)
            if slot is not None:
                return slot
        slot, _ = self._find_hash(hash(item_id))
        if slot >= 0 and self.names[slot] == item_id.encode("utf-8"):
            return slot
        return None

    def get_many(self, ids: Sequence[str], verify: bool = True) -> np.ndarray:
        """Slots of `ids`, -1 for unknown ones.

        Args:
            verify: compare the stored id at each hash match. Without it an unknown id matches another
                item's slot with odds ~ items / 2**64: good enough for exclusion lists, not for writes.
        """
        if not ids:
            return np.empty(0, dtype=np.int64)
        hashes = np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids))
        slots = np.full(len(ids), -1, dtype=np.int64)
        if len(self._keys):
            pos = np.minimum(np.searchsorted(self._keys, hashes), len(self._keys) - 1)
            hit = self._keys[pos] == hashes
            slots[hit] = self._slots[pos[hit]]
        if self._recent:
            for i in np.flatnonzero(slots < 0).tolist():
                slots[i] = self._recent.get(int(hashes[i]), -1)
        known = slots >= 0
        # A hash match is only a candidate: the id stored at the slot must be the one asked for.
        if verify and known.any():
            encoded = np.array([i.encode("utf-8") for i in ids])
            same = np.zeros(len(ids), dtype=bool)
            same[known] = self.names[slots[known]] == encoded[known]
            slots[~same] = -1
        if self._collisions:
            for i, item_id in enumerate(ids):
                slot = self._collisions.get(item_id)
                if slot is not None:
                    slots[i] = slot
        return slots

    def add(self, item_id: str, slot: int) -> None:
        """Records a new id (not already present) at `slot`."""
        encoded = item_id.encode("utf-8")
        if len(encoded) > self.names.itemsize:
            self.names = self.names.astype(f"S{len(encoded)}")
        self.names[slot] = encoded
        self.count += 1
        h = hash(item_id)
        held, pos = self._find_hash(h)
        if held >= 0:
            self._collisions[item_id] = slot
        elif pos >= 0:
            self._slots[pos] = slot
        else:
            self._recent[h] = slot
            if len(self._recent) >= max(_MERGE_AT, len(self._keys) // 16):
                self._merge()

    def remove(self, item_id: str, slot: int) -> None:
        self.names[slot] = b""
        self.count -= 1
        if self._collisions.pop(item_id, None) is not None:
            return
        h = hash(item_id)
        if self._recent.pop(h, None) is not None:
            return
        _, pos = self._find_hash(h)
        self._slots[pos] = -1

    def _merge(self) -> None:
        keys = np.concatenate([self._keys, np.fromiter(self._recent.keys(), np.int64, len(self._recent))])
        slots = np.concatenate([self._slots, np.fromiter(self._recent.values(), np.int64, len(self._recent))])
        order = np.argsort(keys, kind="stable")
        self._keys, self._slots = keys[order], slots[order]
        self._recent = {}


Attributes = dict[str, list[str]]


class AttributeTable:
    """Each slot's attributes as a number naming its distinct combination (0: none); a bitmap per
    attribute value that has been filtered on, kept up to date on every write, at most `max_bitmaps` of them.

    Catalogues repeat a few combinations (genre x availability) many times, so the combinations are
    few and each is one Python dict; a catalogue with an attribute unique to every item would make one
    combination per item and lose that saving.
    """

    def __init__(self, capacity: int, max_bitmaps: int = 64) -> None:
        self.combos: list[Attributes | None] = [None]
        self._combo_number: dict[tuple, int] = {}
        self._value_combos: dict[tuple[str, str], list[int]] = {}
        self.combo = np.zeros(capacity, dtype=np.int32)
        self.max_bitmaps = max_bitmaps
        self._bitmaps: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        # Values whose bitmap a filter graph relies on: never evicted.
        self.pinned: set[tuple[str, str]] = set()
        # Searches (holding only the index's read lock) fill and evict the cache concurrently.
        self._cache_lock = threading.Lock()

    def grow(self, capacity: int) -> None:
        self.combo = _grown(self.combo, capacity)
        for key, bitmap in self._bitmaps.items():
            self._bitmaps[key] = _grown(bitmap, capacity)

    def number(self, attributes: Attributes | None) -> int:
        if not attributes:
            return 0
        signature = tuple((k, tuple(v)) for k, v in attributes.items())
        number = self._combo_number.get(signature)
        if number is None:
            number = len(self.combos)
            self.combos.append(attributes)
            self._combo_number[signature] = number
            for key, values in attributes.items():
                for value in values:
                    self._value_combos.setdefault((key, value), []).append(number)
        return number

    def attributes_at(self, slot: int) -> Attributes | None:
        return self.combos[int(self.combo[slot])]

    def member(self, key: str, value: str) -> np.ndarray:
        """For each combination number, whether it holds key=value."""
        member = np.zeros(len(self.combos), dtype=bool)
        member[self._value_combos.get((key, value), [])] = True
        return member

    def known(self, key: str, value: str) -> bool:
        return (key, value) in self._value_combos

    def set(self, slots: np.ndarray, numbers: np.ndarray) -> None:
        """Gives `slots` the combinations `numbers` (0 for a deleted slot) and updates the bitmaps."""
        self.combo[slots] = numbers
        for (key, value), bitmap in self._bitmaps.items():
            bitmap[slots] = self.member(key, value)[numbers]

    def bitmap(self, key: str, value: str, used: int) -> np.ndarray:
        """Slots holding key=value (dead slots never do); built on first use from the combination column."""
        with self._cache_lock:
            bitmap = self._bitmaps.get((key, value))
            if bitmap is not None:
                self._bitmaps.move_to_end((key, value))
                return bitmap
            bitmap = np.zeros(len(self.combo), dtype=bool)
            bitmap[:used] = self.member(key, value)[self.combo[:used]]
            self._bitmaps[(key, value)] = bitmap
            for old in list(self._bitmaps):
                if len(self._bitmaps) <= self.max_bitmaps:
                    break
                if old not in self.pinned:
                    del self._bitmaps[old]
            return bitmap


def _grown(array: np.ndarray, capacity: int) -> np.ndarray:
    out = np.zeros(capacity, dtype=array.dtype)
    out[: len(array)] = array
    return out
