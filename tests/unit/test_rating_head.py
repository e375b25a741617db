"""The rating head: learns a planted rating signal over a tiny next-item trunk, blends without changing the
next-item order at weight 0, never reads a rating's own prefix, and is refused on data without ratings."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec_data.datasets import CatalogItem, Dataset, Interaction
from lmrec.errors import FailedPrecondition
from training.split import build_split

torch = pytest.importorskip("torch", reason="the head trains with torch")

from training.lm_model import LMSeqNet  # noqa: E402
from ranking_service.rating_head import RatingHead, combined_scores  # noqa: E402
from training.rating_head import (RatingHeadConfig, RatingHeadUnavailable, _examples, fit_rating_head,  # noqa: E402
                                  phase_targets, predict_targets, prefix_contexts, rating_lookup)
from training.sequences import left_pad  # noqa: E402

N_ITEMS, DIM, MAX_LEN = 30, 8, 10


def _tiny_trunk():
    """A randomly initialised next-item net: what matters is that the head reads its ĥ and e."""
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(N_ITEMS, 12), dim=-1)
    net = LMSeqNet(text, torch.ones(N_ITEMS), DIM, 1, 1, 0.0, MAX_LEN, unit=False).eval()
    with torch.no_grad():
        items = net.item_vectors()

    def encode(histories: list[np.ndarray]) -> np.ndarray:
        seq = torch.from_numpy(left_pad(histories, max(len(h) for h in histories)))
        with torch.no_grad():
            return torch.nn.functional.normalize(net.hidden(seq, items)[:, -1], dim=-1).numpy()

    return encode, items.numpy()


def _planted(encode, vectors, users: int = 240, length: int = 14, seed: int = 0):
    """Histories whose every rating depends on the context before it and the item: 3 + 4·ĥ·e/|e| + item
    quality, plus noise. The last item of each history is the held-out target."""
    rng = np.random.default_rng(seed)
    quality = rng.normal(0, 0.5, N_ITEMS)
    seqs = [rng.choice(N_ITEMS, size=length, replace=False) for _ in range(users)]
    contexts = prefix_contexts(encode, seqs, MAX_LEN)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    ratings = [3.0 + 4.0 * np.einsum("td,td->t", c[:-1], unit[s]) + quality[s] + rng.normal(0, 0.2, length)
               for c, s in zip(contexts, seqs)]
    ratings = [np.clip(r, 1, 5) for r in ratings]
    for r in ratings:
        r[0] = np.nan  # no context before the first item; an unrated item must be skipped, not read as 0
    history = [s[:-1] for s in seqs]
    targets = phase_targets(contexts, history, [r[:-1] for r in ratings], np.array([s[-1] for s in seqs]),
                            np.array([r[-1] for r in ratings]))
    return contexts, history, [r[:-1] for r in ratings], targets


def test_head_learns_a_planted_context_item_signal_that_biases_cannot():
    encode, vectors = _tiny_trunk()
    contexts, history, ratings, targets = _planted(encode, vectors)
    config = RatingHeadConfig(hidden=32, lr=5e-3, batch_size=128, epochs=25)
    head, _ = fit_rating_head(contexts, history, ratings, vectors, config)
    biases, _ = fit_rating_head(contexts, history, ratings, vectors, RatingHeadConfig(hidden=0, epochs=3))

    def error(h: RatingHead) -> float:
        return float(np.sqrt(np.mean((predict_targets(h, targets, vectors) - targets.values) ** 2)))

    mean = float(np.sqrt(np.mean((np.nanmean(np.concatenate(ratings)) - targets.values) ** 2)))
    assert error(head) < 0.7 * error(biases)
    assert error(biases) < mean  # the item quality alone is worth something


def test_matrix_prediction_equals_pairwise_and_state_round_trips():
    encode, vectors = _tiny_trunk()
    contexts, history, ratings, targets = _planted(encode, vectors, users=40)
    head, _ = fit_rating_head(contexts, history, ratings, vectors, RatingHeadConfig(hidden=8, epochs=2))
    offsets = head.offsets(targets.histories, targets.ratings)
    matrix = head.predict(targets.contexts, offsets, vectors, chunk=7)
    users = np.repeat(np.arange(len(offsets)), N_ITEMS)
    pairs = head.predict_pairs(targets.contexts[users], offsets[users], np.tile(np.arange(N_ITEMS), len(offsets)),
                               vectors)
    np.testing.assert_allclose(matrix.ravel(), pairs, atol=1e-6)
    again = RatingHead.from_state(head.state())
    np.testing.assert_allclose(again.predict(targets.contexts, offsets, vectors), matrix)


def test_validation_returns_the_best_epoch_and_its_curve():
    encode, vectors = _tiny_trunk()
    contexts, history, ratings, targets = _planted(encode, vectors, users=80)
    head, curve = fit_rating_head(contexts, history, ratings, vectors, RatingHeadConfig(hidden=8, epochs=4), targets)
    assert len(curve) == 4
    got = float(np.sqrt(np.mean((predict_targets(head, targets, vectors) - targets.values) ** 2)))
    assert got == pytest.approx(min(curve))


def test_prefix_contexts_read_only_the_history_before_each_position():
    seen: list[list[int]] = []

    def encode(histories):
        seen.extend(h.tolist() for h in histories)
        return np.array([[len(h), h[-1], h[0]] for h in histories], dtype=np.float32)

    out = prefix_contexts(encode, [np.array([5, 6, 7, 8]), np.array([], dtype=np.int64)], max_len=2, batch_size=2)
    assert out[0].shape == (5, 3) and out[1].shape == (1, 3) and not out[1].any()
    assert not out[0][0].any()
    # row t: the last max_len items of history[:t]; the item at position t is never in it
    np.testing.assert_array_equal(out[0][1:], [[1, 5, 5], [2, 6, 5], [2, 7, 6], [2, 8, 7]])
    assert all(len(h) <= 2 for h in seen)


def test_no_training_example_reads_its_own_rating():
    contexts = [np.arange(4, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)]  # row t marks prefix t
    seq, ratings, bias = [np.array([0, 1, 2])], [np.array([5.0, 1.0, 3.0])], np.zeros(3)
    ctx, off, items, values = _examples(contexts, seq, ratings, bias, 3.0, RatingHeadConfig(user_shrinkage=0.0))
    # next: the rating of seq[t] reads the context of seq[:t] and the ratings before t only
    np.testing.assert_array_equal(ctx[:, 0], [1, 2])
    np.testing.assert_allclose(off, [2.0, 0.0])
    np.testing.assert_array_equal(items, [1, 2])
    np.testing.assert_array_equal(values, [1.0, 3.0])
    final = RatingHeadConfig(user_shrinkage=0.0, examples="final")
    ctx, off, items, _ = _examples(contexts, seq, ratings, bias, 3.0, final)
    # final: the whole history's context, and an offset that leaves the predicted rating out
    np.testing.assert_array_equal(ctx[:, 0], [3, 3, 3])
    np.testing.assert_allclose(off, [-1.0, 1.0, 0.0])  # residuals 2, -2, 0


def test_weight_zero_keeps_the_next_item_order_and_masks():
    rng = np.random.default_rng(0)
    scores, rating = rng.normal(size=(5, 40)), rng.uniform(1, 5, size=(5, 40))
    scores[:, :3] = -np.inf
    blended = combined_scores(scores, rating, 0.0)
    np.testing.assert_array_equal(np.argsort(-blended, axis=1, kind="stable"),
                                  np.argsort(-scores, axis=1, kind="stable"))
    assert np.isneginf(blended[:, :3]).all() and np.isfinite(blended[:, 3:]).all()
    # the weight is scale-free: rescaling either head's scores changes nothing
    np.testing.assert_allclose(combined_scores(10 * scores, 3 * rating + 1, 0.5), combined_scores(scores, rating, 0.5))
    # a large weight ranks by predicted rating among the unmasked items
    top = np.argmax(combined_scores(scores, rating, 1e6), axis=1)
    np.testing.assert_array_equal(top, 3 + np.argmax(rating[:, 3:], axis=1))


def test_data_without_ratings_is_refused_clearly():
    items = [CatalogItem(str(i), f"m{i}", f"m{i}") for i in range(5)]
    dataset = Dataset("implicit", items, [Interaction(str(u), str(i), 10 * u + i) for u in range(3) for i in range(4)])
    with pytest.raises(RatingHeadUnavailable, match="no ratings"):
        rating_lookup(dataset, build_split(dataset))
    assert issubclass(RatingHeadUnavailable, FailedPrecondition)  # served as FAILED_PRECONDITION, not INTERNAL
    encode, vectors = _tiny_trunk()
    seqs = [np.arange(4), np.arange(3)]
    with pytest.raises(RatingHeadUnavailable):
        fit_rating_head(prefix_contexts(encode, seqs, MAX_LEN), seqs, [np.full(4, np.nan), np.full(3, np.nan)],
                        vectors, RatingHeadConfig(epochs=1))
