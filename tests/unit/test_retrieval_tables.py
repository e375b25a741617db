"""Numpy-backed bookkeeping of the retrieval index: the id table and the attribute table."""

from __future__ import annotations

import numpy as np

from retrieval_service.tables import AttributeTable, IdTable


class Colliding(str):
    """An id whose hash every other Colliding id shares."""

    def __hash__(self) -> int:
        return 42


def test_ids_survive_merges_removal_and_reuse():
    table = IdTable(8)
    n = 10_000  # past the merge size, so lookups go through the sorted columns and the recent dict
    table.grow(n)
    for slot in range(n):
        table.add(f"item-{slot}", slot)
    assert table.count == n
    assert table.get("item-1234") == 1234 and table.get("item-99999") is None
    np.testing.assert_array_equal(table.get_many(["item-7", "nope", "item-9999"]), [7, -1, 9999])
    table.remove("item-7", 7)
    assert table.get("item-7") is None and table.count == n - 1
    table.add("a-much-longer-id-than-before", 7)  # widens the byte column
    assert table.get("a-much-longer-id-than-before") == 7 and table.id_at(7) == "a-much-longer-id-than-before"
    assert table.ids_at([1, 7]) == ["item-1", "a-much-longer-id-than-before"]
    assert table.get("item-9998") == 9998


def test_ids_with_the_same_hash_are_told_apart():
    table = IdTable(4)
    a, b, c = Colliding("a"), Colliding("b"), Colliding("c")
    table.add(a, 0)
    table.add(b, 1)
    assert table.get(a) == 0 and table.get(b) == 1 and table.get(c) is None
    np.testing.assert_array_equal(table.get_many([b, a, c]), [1, 0, -1])
    table.remove(a, 0)
    assert table.get(a) is None and table.get(b) == 1
    table.add(c, 2)
    assert table.get(c) == 2 and table.get(b) == 1


def test_attribute_bitmaps_follow_writes():
    table = AttributeTable(6, max_bitmaps=1)
    red, blue = table.number({"colour": ["red"]}), table.number({"colour": ["blue"], "size": ["s"]})
    assert table.number({"colour": ["red"]}) == red and table.number(None) == 0
    table.set(np.arange(6), np.array([red, blue, red, 0, blue, red], np.int32))
    np.testing.assert_array_equal(np.flatnonzero(table.bitmap("colour", "red", 6)), [0, 2, 5])
    table.set(np.array([0, 1]), np.array([blue, 0], np.int32))  # 0 changes colour, 1 is deleted
    np.testing.assert_array_equal(np.flatnonzero(table.bitmap("colour", "red", 6)), [2, 5])
    np.testing.assert_array_equal(np.flatnonzero(table.bitmap("colour", "blue", 6)), [0, 4])  # evicts red
    assert table.attributes_at(4) == {"colour": ["blue"], "size": ["s"]}
    assert not table.known("colour", "green")
