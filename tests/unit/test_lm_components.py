"""The LM recommender's parts: co-occurrence pairs, the towers' masking, and the versioned item store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ranking_service.item_store import ItemStore

torch = pytest.importorskip("torch", reason="the model code needs the training extra")

from training.lm_finetune import co_occurrence_pairs  # noqa: E402
from training.lm_model import ContextModel, LMSeqNet, UserTower  # noqa: E402


def test_co_occurrence_pairs_are_nearby_distinct_items_in_order():
    pairs = co_occurrence_pairs([np.array([1, 2, 2, 3]), np.array([7])], window=2)
    # gap 1: (1,2) (2,3) [(2,2) dropped]; gap 2: (1,2) (2,3)
    assert sorted(map(tuple, pairs.tolist())) == [(1, 2), (1, 2), (2, 3), (2, 3)]
    assert len(co_occurrence_pairs([np.array([5])], window=3)) == 0


def test_context_model_ignores_left_padding():
    torch.manual_seed(0)
    context = ContextModel(UserTower(dim=8, layers=2, heads=2, dropout=0.0, max_len=10)).eval()
    history = torch.randn(1, 4, 8)
    padded = torch.cat([torch.randn(1, 3, 8), history], dim=1)
    mask = torch.cat([torch.zeros(1, 3), torch.ones(1, 4)], dim=1)
    with torch.no_grad():
        plain = context(history, torch.ones(1, 4))
        with_pad = context(padded, mask)
    torch.testing.assert_close(plain, with_pad, atol=1e-5, rtol=1e-5)
    assert torch.allclose(plain.norm(dim=-1), torch.ones(1))


def test_items_without_an_id_embedding_are_represented_by_text_alone():
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(5, 12), dim=-1)
    known = torch.tensor([True, True, False, True, False])
    net = LMSeqNet(text, known, dim=8, layers=1, heads=1, dropout=0.0, max_len=6).eval()
    with torch.no_grad():
        items = net.item_vectors()
        text_only = net.head(text, torch.zeros(5, 8))
        all_dropped = net.item_vectors(torch.zeros(5))
    torch.testing.assert_close(items[~known], text_only[~known])
    assert not torch.allclose(items[known], text_only[known])
    torch.testing.assert_close(all_dropped, text_only)
    with torch.no_grad():
        logits = net.logits(net.hidden(torch.tensor([[0, 1, 2]]), items)[:, -1], items)
    assert logits.shape == (1, 5) and torch.isfinite(logits).all()


def _vectors(n: int, value: float) -> np.ndarray:
    return np.full((n, 3), value, dtype=np.float32)


def test_item_store_keeps_versions_apart_and_catches_up(tmp_path):
    path = tmp_path / "items.sqlite"
    old = ItemStore(path, 3, "v1")
    assert old.load(lambda ids, texts: _vectors(len(ids), 1.0)) == 0
    old.put(["a", "b"], ["text a", "text b"], _vectors(2, 1.0))

    new = ItemStore(path, 3, "v2")
    encoded = []
    assert new.load(lambda ids, texts: encoded.extend(texts) or _vectors(len(ids), 2.0)) == 2
    assert sorted(encoded) == ["text a", "text b"]
    # While both are loaded, each serves its own vectors.
    assert old.gather(["a"])[0][0, 0] == 1.0 and new.gather(["a"])[0][0, 0] == 2.0

    # Written through the old model during the swap: a new item, a deletion, a new text for a known item.
    old.put(["c"], ["text c"], _vectors(1, 1.0))
    old.delete(["b"])
    old.put(["a"], ["text a, edited"], _vectors(1, 1.0))
    encoded.clear()
    assert new.reconcile(lambda ids, texts: encoded.extend(texts) or _vectors(len(ids), 2.0)) == 2
    assert sorted(encoded) == ["text a, edited", "text c"]
    vectors, known = new.gather(["a", "b", "c"])
    assert known.tolist() == [True, False, True] and vectors[2, 0] == 2.0
    assert new.prune(keep={"v1"}) == 0  # Ray replicas keep the previous version's rows
    assert new.prune() == 2  # v1 rows of a and c
    old.close()
    new.close()

    reopened = ItemStore(path, 3, "v2")
    assert reopened.load(lambda ids, texts: pytest.fail("nothing to re-encode")) == 0
    assert sorted(reopened.known_ids()) == ["a", "c"]
    reopened.close()


def test_trained_text_vectors_serve_only_unchanged_catalogue_items(tmp_path):
    from lmrec.bundle import TrainedTexts, write_trained_texts

    vectors = np.eye(3, 4, dtype=np.float32)
    write_trained_texts(tmp_path, ["a", "b", "c"], ["Alpha (1990)", "Beta (1991)", "Gamma (1992)"], vectors)
    keyed = json.loads((tmp_path / "text_hashes.json").read_text())
    assert "Alpha" not in json.dumps(keyed), "the bundle keeps hashes, not item texts"
    table = TrainedTexts(keyed["item_ids"], keyed["sha256"], np.load(tmp_path / "text_embeddings.npy"))
    got, hit = table.lookup(["b", "a", "c", "", "d"], ["Beta (1991)", "Alpha (1990) edited", "Gamma (1992)",
                                                      "Beta (1991)", "Beta (1991)"])
    assert hit.tolist() == [True, False, True, False, False]
    np.testing.assert_array_equal(got[0], vectors[1])
    np.testing.assert_array_equal(got[2], vectors[2])
    assert not got[[1, 3, 4]].any()


def test_calibration_holdout_is_a_seeded_share_of_known_items():
    from training.cold_calibration import calibration_holdout

    known = np.zeros(100, dtype=bool)
    known[:80] = True
    held = calibration_holdout(known, 0.1, seed=3)
    assert held.sum() == 8 and not held[80:].any()
    assert np.array_equal(held, calibration_holdout(known, 0.1, seed=3))
    assert not calibration_holdout(known, 0.0, seed=3).any()


def test_smoothed_early_stopping_ignores_one_lucky_check():
    from training.sequences import EarlyStopping

    net = torch.nn.Linear(1, 1)
    curve = [(2, 0.05), (4, 0.08), (6, 0.12), (8, 0.08), (10, 0.10), (12, 0.11), (14, 0.11), (16, 0.08), (18, 0.07)]
    plain, smooth = EarlyStopping(patience=3), EarlyStopping(patience=3, smooth=3)
    for epoch, score in curve:
        plain.update(epoch, score, net)
        smooth.update(epoch, score, net)
    assert plain.best_epoch == 6  # the single spike
    assert smooth.best_epoch == 14  # the end of the best three-check stretch (10-14, mean 0.107)


def test_weight_average_tracks_parameters_and_swaps_back():
    from training.sequences import WeightAverage

    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(0.0)
    average = WeightAverage(net, decay=0.5)
    for value in (1.0, 1.0):
        with torch.no_grad():
            net.weight.fill_(value)
        average.update()
    assert torch.allclose(average.state["weight"], torch.full((1, 2), 0.75))  # 0 -> 0.5 -> 0.75
    with average.swapped_in():
        assert torch.allclose(net.weight, torch.full((1, 2), 0.75))
    assert torch.allclose(net.weight, torch.ones(1, 2))  # the live weights are back for the next step


def test_training_with_weight_average_returns_the_averaged_network():
    from training.sequences import fit_next_item

    torch.manual_seed(0)
    net = torch.nn.Embedding(5, 3)
    windows = [np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4])]
    captured = {}

    def loss_fn(inputs, targets):
        captured["live"] = {k: v.detach().clone() for k, v in net.state_dict().items()}
        return net(inputs).pow(2).mean()

    fit_next_item(net, windows, lr=0.1, batch_size=2, epochs=3, rng=np.random.default_rng(0), loss_fn=loss_fn,
                  weight_average=0.9)
    # Three steps of decay 0.9 leave most of the initial weights in the average, unlike the live ones.
    assert not torch.allclose(net.weight, captured["live"]["weight"])
