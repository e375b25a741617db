"""Reserved slots (lmrec.slots): the top-k list the gateway serves with `new_item_slots`."""

from lmrec.slots import with_reserved_slots

NEW = {"n1", "n2", "n3"}


def ranked(*ids):
    return list(ids)


def test_no_slots_or_enough_reserved_items_keep_the_plain_top_k():
    order = ranked("a", "n1", "b", "c", "n2")
    assert with_reserved_slots(order, 3, 0, NEW.__contains__) == [0, 1, 2]
    assert with_reserved_slots(order, 3, 1, NEW.__contains__) == [0, 1, 2]


def test_lowest_unreserved_items_give_way_to_the_best_reserved_ones_at_the_end():
    order = ranked("a", "b", "c", "d", "n1", "e", "n2", "n3")
    assert with_reserved_slots(order, 4, 2, NEW.__contains__) == [0, 1, 4, 6]


def test_reserved_items_already_in_the_top_k_count_and_keep_their_place():
    order = ranked("n1", "a", "b", "c", "n2")
    assert with_reserved_slots(order, 3, 2, NEW.__contains__) == [0, 1, 4]


def test_fewer_reserved_items_than_slots_take_what_there_is():
    order = ranked("a", "b", "c", "n1")
    assert with_reserved_slots(order, 3, 3, NEW.__contains__) == [0, 1, 3]
    assert with_reserved_slots(ranked("a", "b"), 3, 2, NEW.__contains__) == [0, 1]


def test_every_slot_reserved():
    order = ranked("a", "b", "n1", "n2")
    assert with_reserved_slots(order, 2, 2, NEW.__contains__) == [2, 3]
