import os

import numpy as np
import pytest

from lmrec_data.datasets import CatalogItem, Dataset, Interaction, load_dataset, resolve_data_path
from training.split import NO_ITEM, SplitConfig, build_split


def _dataset(events: dict[str, list[tuple[str, int]]], n_items: int = 20) -> Dataset:
    items = [CatalogItem(str(i), f"Item {i}", f"Item {i} text") for i in range(1, n_items + 1)]
    interactions = [Interaction(u, it, ts, 4.0) for u, evs in events.items() for it, ts in evs]
    return Dataset("tiny", items, interactions)


def _raw(split, seq):
    return [split.item_ids[i] for i in seq]


def test_leave_one_out_orders_by_time_then_file_order():
    # Items "3" and "12" share a timestamp: the file lists "3" first, and so does the split.
    ds = _dataset({"u1": [("5", 40), ("3", 10), ("12", 10), ("7", 30), ("9", 50)]})
    split = build_split(ds, SplitConfig(cold_fraction=0.0))
    assert _raw(split, split.train_sequences[0]) == ["3", "12", "7"]
    assert split.item_ids[split.val_items[0]] == "5"
    assert split.item_ids[split.test_items[0]] == "9"
    assert list(split.train_timestamps[0]) == [10, 10, 30]
    assert split.protocol()["tie_break"] == "file"


def test_the_test_item_of_a_tied_final_group_is_the_last_in_the_file_not_the_highest_id():
    ds = _dataset({"u1": [("1", 10), ("2", 20), ("9", 30), ("4", 30)]})
    assert split_test_item(ds, "file") == "4"
    assert split_test_item(ds, "item_id") == "9"  # the old rule: string order, "9" > "4"


def split_test_item(ds, tie_break):
    split = build_split(ds, SplitConfig(cold_fraction=0.0, tie_break=tie_break))
    return split.item_ids[split.test_items[0]]


def test_an_unknown_tie_break_is_refused():
    with pytest.raises(ValueError, match="tie_break"):
        build_split(_dataset({"u": [("1", 1), ("2", 2), ("3", 3)]}), SplitConfig(tie_break="random"))


def test_users_with_fewer_than_three_interactions_are_dropped():
    ds = _dataset({"a": [("1", 1), ("2", 2)], "b": [("1", 1), ("2", 2), ("3", 3)], "c": [("4", 1)]})
    split = build_split(ds, SplitConfig(cold_fraction=0.0))
    assert split.user_ids == ["b"]
    assert split.stats["dropped_users_lt_min"] == 2
    assert len(split.train_sequences[0]) == 1


def test_dense_indices_cover_the_whole_catalogue_in_natural_order():
    ds = _dataset({"10": [("1", 1), ("2", 2), ("3", 3)], "2": [("4", 1), ("5", 2), ("6", 3)]}, n_items=12)
    split = build_split(ds, SplitConfig(cold_fraction=0.0))
    assert split.user_ids == ["2", "10"]
    assert split.item_ids == [str(i) for i in range(1, 13)]  # items never interacted with are candidates
    assert split.item_index["12"] == 11 and split.user_index["10"] == 1
    assert split.item_texts[0] == "Item 1 text"


def test_repeats_and_unknown_items_are_dropped():
    ds = _dataset({"u": [("1", 1), ("2", 2), ("1", 3), ("999", 4), ("3", 5), ("4", 6)]})
    split = build_split(ds, SplitConfig(cold_fraction=0.0))
    assert _raw(split, split.train_sequences[0]) == ["1", "2"]
    assert split.stats["dropped_repeat_interactions"] == 1
    assert split.stats["dropped_unknown_item_interactions"] == 1


def test_cold_items_leave_train_and_validation_but_stay_candidates():
    rng = np.random.default_rng(1)
    events = {f"u{u}": [(str(i), t) for t, i in enumerate(rng.choice(np.arange(1, 41), 12, replace=False))]
              for u in range(60)}
    split = build_split(_dataset(events, n_items=40), SplitConfig(cold_fraction=0.25, seed=3))
    cold = split.cold_items
    assert cold.sum() == 10 and split.n_items == 40
    for seq in split.history_sequences("test"):
        assert not cold[seq].any()
    valid = split.val_items[split.val_items != NO_ITEM]
    assert not cold[valid].any()
    assert (split.val_items == NO_ITEM).sum() == split.stats["dropped_cold_validation_targets"] > 0
    assert cold[split.test_items].sum() == split.stats["n_cold_test_users"] > 0
    assert split.history_matrix("test")[:, cold].nnz == 0
    again = build_split(_dataset(events, n_items=40), SplitConfig(cold_fraction=0.25, seed=3))
    assert np.array_equal(again.cold_items, cold)  # seeded, hence reproducible


def test_phases_differ_by_the_validation_item():
    ds = _dataset({"u": [("1", 1), ("2", 2), ("3", 3), ("4", 4)]})
    split = build_split(ds, SplitConfig(cold_fraction=0.0))
    assert _raw(split, split.history_sequences("validation")[0]) == ["1", "2"]
    assert _raw(split, split.history_sequences("test")[0]) == ["1", "2", "3"]
    assert split.history_matrix("test").toarray()[0, :4].tolist() == [1, 1, 1, 0]
    assert split.targets("validation")[0] == split.item_index["3"]
    assert split.targets("test")[0] == split.item_index["4"]
    assert list(split.eval_users("validation")) == [0]
    with pytest.raises(ValueError):
        split.history_sequences("train")


def test_ml100k_split_statistics():
    path = resolve_data_path()
    if not (path / "u.data").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but ML-100K is missing at {path}")
        pytest.skip(f"ML-100K not found at {path} (set LMREC_DATA or run `lmrec data download`)")
    split = build_split(load_dataset(path))
    assert (split.n_users, split.n_items, int(split.cold_items.sum())) == (943, 1682, 168)
    assert split.stats["n_train_interactions"] + split.stats["dropped_cold_train_interactions"] == 100_000 - 2 * 943


def test_without_items_makes_them_cold_for_a_fit_and_keeps_targets():
    ds = _dataset({"a": [("1", 1), ("2", 2), ("3", 3), ("4", 4), ("5", 5)],
                   "b": [("2", 1), ("6", 2), ("7", 3), ("3", 4)]})
    split = build_split(ds, SplitConfig(cold_fraction=0.0))
    removed = np.zeros(split.n_items, dtype=bool)
    removed[[split.item_index["2"], split.item_index["4"]]] = True
    view = split.without_items(removed, "calibration")
    assert [_raw(view, s) for s in view.train_sequences] == [["1", "3"], ["6"]]
    assert [list(t) for t in view.train_timestamps] == [[1, 3], [2]]
    assert list(view.val_items) == list(split.val_items) and list(view.test_items) == list(split.test_items)
    assert view.fingerprint != split.fingerprint and view.stats["removed_items"] == 2
    assert not view.history_matrix("validation")[:, removed].nnz
    # The source is untouched.
    assert _raw(split, split.train_sequences[0]) == ["1", "2", "3"]
