"""The rating objective without servers: the head's bundle file round-trips keyed by item id, the ranker
returns predicted ratings and blends them only when asked, data without ratings gets `rating_head: null`,
and every new request field is validated by name."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.policy.scenarios import parse_scenarios
from gateway.recommend import user_ratings
from gateway.servicer import validate_recommend
from lmrec_data.datasets import CatalogItem, Dataset, Interaction
from lmrec.errors import ArtifactMismatch, InvalidArgument
from lmrec.bundle import FORMAT_VERSION, Bundle, EncoderSpec, Manifest
from lmrec.v1 import common_pb2, gateway_service_pb2 as gw
from ranking_service.ranker import RankContext, Ranker
from ranking_service.rating_head import (RATING_HEAD_FILE, RatingHead, ServedRatingHead, combined_scores,
                                         write_rating_head)
from ranking_service.servicer import rank_context

DIM, ITEMS = 4, 12


def _head(hidden: int = 5, seed: int = 0) -> RatingHead:
    rng = np.random.default_rng(seed)
    return RatingHead(mu=3.5, item_bias=rng.normal(0, 0.3, ITEMS), user_shrinkage=1.0, user_weight=0.8,
                      w1=rng.normal(0, 0.5, (3 * DIM + 1, hidden)), b1=rng.normal(0, 0.1, hidden),
                      w2=rng.normal(0, 0.5, hidden), b2=0.1, bounds=(1.0, 5.0))


IDS = [f"m{i}" for i in range(ITEMS)]


def test_the_bundle_file_round_trips_with_biases_keyed_by_item_id(tmp_path):
    head = _head()
    write_rating_head(tmp_path / RATING_HEAD_FILE, head, IDS)
    served = ServedRatingHead.load(tmp_path / RATING_HEAD_FILE, DIM)
    rng = np.random.default_rng(1)
    vectors, context = rng.normal(size=(ITEMS, DIM)), rng.normal(size=DIM)
    history, ratings = np.array([3, 1, 7]), np.array([5.0, np.nan, 2.0])
    offset = head.offset(history, ratings)
    assert served.offset({"m3": 5.0, "m7": 2.0}) == pytest.approx(offset)
    offline = head.predict(context[None], np.array([offset]), vectors)[0]
    order = [5, 0, 11, 2]  # any candidate order: biases follow the ids, not positions
    np.testing.assert_allclose(served.predict(context, offset, vectors[order], [IDS[i] for i in order]),
                               offline[order], atol=1e-12)
    # An item the head never saw (upserted later) gets bias 0, and so adds nothing to the user's offset.
    unseen = served.predict(context, offset, vectors[:1], ["new-item"])
    again = RatingHead(**{**head.__dict__, "item_bias": np.zeros(ITEMS)})
    np.testing.assert_allclose(unseen, again.predict(context[None], np.array([offset]), vectors)[0, :1])
    assert served.offset({"m3": 5.0, "m7": 2.0, "new-item": 4.0}) == pytest.approx(
        (5.0 - 3.5 - head.item_bias[3] + 2.0 - 3.5 - head.item_bias[7] + 0.5) / 4)
    assert served.offset({}) == 0.0


def test_a_head_for_another_trunk_width_or_a_broken_file_is_refused(tmp_path):
    write_rating_head(tmp_path / RATING_HEAD_FILE, _head(), IDS)
    with pytest.raises(ArtifactMismatch, match="features"):
        ServedRatingHead.load(tmp_path / RATING_HEAD_FILE, DIM + 1)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ArtifactMismatch, match="not a rating head"):
        ServedRatingHead.load(tmp_path / "bad.npz", DIM)
    with pytest.raises(ValueError):
        write_rating_head(tmp_path / "x.npz", _head(), IDS[:-1])


class _DotRanker(Ranker):
    """Score = the first coordinate; ĥ for the head = the history's first item's vector."""

    kind = "dot"

    def __init__(self, head: ServedRatingHead | None, vectors: dict[str, np.ndarray]) -> None:
        super().__init__(manifest=None, store=None)
        self.rating_head = head
        self.vectors = vectors

    def history_variants(self, context, leave_one_out=True):
        return np.eye(DIM)[0], None, []

    def combine(self, interest, query_vector):
        return interest

    def predicted_ratings(self, context, candidates, candidate_ids):
        h = self.vectors[context.history_item_ids[0]]
        return self.rating_head.predict(h, self.rating_head.offset(dict(context.item_ratings)), candidates,
                                        candidate_ids)


def test_the_ranker_returns_predicted_ratings_and_blends_only_with_a_weight(tmp_path):
    write_rating_head(tmp_path / RATING_HEAD_FILE, _head(), IDS)
    served = ServedRatingHead.load(tmp_path / RATING_HEAD_FILE, DIM)
    rng = np.random.default_rng(2)
    candidates = rng.normal(size=(8, DIM))
    ids = IDS[:8]
    known = np.array([True] * 6 + [False] * 2)
    ranker = _DotRanker(served, {"m9": rng.normal(size=DIM)})
    ctx = RankContext("u", ["m9"], item_ratings=(("m2", 4.0), ("m9", 5.0)))
    plain = ranker.rank(ctx, None, candidates, False, ids, known)
    np.testing.assert_allclose(plain.scores, candidates[:, 0], rtol=1e-6)  # weight 0: next-item scores as before
    expected = served.predict(ranker.vectors["m9"], served.offset({"m2": 4.0, "m9": 5.0}), candidates, ids)
    np.testing.assert_allclose(plain.predicted_ratings[known], expected[known], rtol=1e-6)
    assert not plain.predicted_ratings[~known].any()

    blended = ranker.rank(RankContext("u", ["m9"], item_ratings=ctx.item_ratings, rating_weight=0.7),
                          None, candidates, False, ids, known)
    want = combined_scores(np.where(known, candidates[:, 0], -np.inf), plain.predicted_ratings, 0.7)
    np.testing.assert_allclose(blended.scores, want, rtol=1e-5)  # standardised over the known candidates only
    assert np.isneginf(blended.scores[~known]).all()
    np.testing.assert_array_equal(blended.predicted_ratings, plain.predicted_ratings)

    without = _DotRanker(None, {}).rank(RankContext("u", ["m9"], rating_weight=0.7), None, candidates, False, ids,
                                        known)
    assert without.predicted_ratings is None
    np.testing.assert_allclose(without.scores, candidates[:, 0], rtol=1e-6)  # no head: the weight changes nothing


def test_data_without_ratings_exports_no_head_and_says_why(tmp_path):
    pytest.importorskip("torch", reason="the export fits with torch")
    from training.rating_export import add_rating_head, export_config
    from training.split import build_split

    items = [CatalogItem(str(i), f"m{i}", f"m{i}") for i in range(5)]
    dataset = Dataset("implicit", items, [Interaction(str(u), str(i), 10 * u + i) for u in range(3) for i in range(4)])
    manifest = Manifest(format_version=FORMAT_VERSION, model_version="v", ranker_kind="lm_seq",
                        encoder=EncoderSpec(base_model="m", tokenizer_dir="tokenizer", max_length=8, dimension=4),
                        models={}, created_at="now", hyperparameters={"dim": 4})
    got = add_rating_head(Bundle(tmp_path, manifest), dataset, build_split(dataset), export_config(tiny=True))
    assert got.hyperparameters["rating_head"] is None
    assert "no ratings" in got.hyperparameters["rating_head_absent"]
    assert "rating_head" not in got.extra_files and not list(tmp_path.iterdir())


def test_the_export_configuration_is_the_one_the_bench_chose():
    pytest.importorskip("torch", reason="the export fits with torch")
    import json
    from pathlib import Path

    from training.rating_export import EXPORT_CONFIG, export_config

    report = Path(__file__).resolve().parents[2] / "docs" / "evaluation" / "ml-100k_multitask.json"
    if not report.is_file():
        pytest.skip("no multi-task report")
    assert EXPORT_CONFIG.as_dict() == json.loads(report.read_text())["rating"]["rows"]["rating head"]["config"]
    assert export_config(tiny=True).epochs < EXPORT_CONFIG.epochs
    assert export_config(tiny=True).hidden == EXPORT_CONFIG.hidden


@pytest.mark.parametrize("weight", [-0.5, float("nan"), float("inf")])
def test_a_bad_rating_weight_is_refused_naming_the_field(weight):
    with pytest.raises(InvalidArgument, match="^rating_weight"):
        validate_recommend(gw.RecommendRequest(user_id="u", k=5, rating_weight=weight))
    with pytest.raises(InvalidArgument, match="^context.rating_weight"):
        rank_context(common_pb2.UserContext(user_id="u", rating_weight=weight), "context")
    with pytest.raises(ValueError, match="rating_weight"):
        parse_scenarios(f"[home]\nrating_weight = {weight}\n")


def test_good_weights_and_ratings_are_accepted_and_bad_ratings_named():
    validate_recommend(gw.RecommendRequest(user_id="u", k=5, rating_weight=0.0))
    validate_recommend(gw.RecommendRequest(user_id="u", k=5, rating_weight=2.5))
    ctx = rank_context(common_pb2.UserContext(user_id="u", rating_weight=0.5, item_ratings={"b": 2.0, "a": 4.5}),
                       "context")
    assert ctx.rating_weight == 0.5 and ctx.item_ratings == (("a", 4.5), ("b", 2.0))
    with pytest.raises(InvalidArgument, match=r"^context.item_ratings\[a\]"):
        rank_context(common_pb2.UserContext(user_id="u", item_ratings={"a": float("nan")}), "context")
    with pytest.raises(InvalidArgument, match="^context.item_ratings key"):
        rank_context(common_pb2.UserContext(user_id="u", item_ratings={"": 3.0}), "context")
    assert parse_scenarios("[top]\nrating_weight = 0.25\n")["top"].rating_weight == 0.25
    assert parse_scenarios("[top]\n")["top"].rating_weight == 0.0


def test_the_gateway_sends_each_items_latest_rating_low_ones_included():
    events = [("a", gw.EVENT_TYPE_RATING, 4.0), ("b", gw.EVENT_TYPE_CLICK, 0.0), ("c", gw.EVENT_TYPE_RATING, 1.0),
              ("a", gw.EVENT_TYPE_RATING, 2.0), ("d", gw.EVENT_TYPE_PURCHASE, 0.0), ("e", gw.EVENT_TYPE_RATING, 5.0)]
    assert user_ratings(events, 10) == {"c": 1.0, "a": 2.0, "e": 5.0}
    assert list(user_ratings(events, 2)) == ["a", "e"]  # the most recently rated
