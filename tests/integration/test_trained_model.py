"""The trained LM recommender end to end: `lmrec train` (tiny config) -> bundle -> serve -> recommend.

Checks what the offline evaluation relies on: the served system ranks exactly as the offline scorer does
for the same input, new items are served by their text alone, and a newly trained bundle is hot-swapped
in while requests keep succeeding.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from lmrec.client import gateway_channel
from lmrec.bundle import Bundle, load_manifest
from lmrec.v1 import common_pb2, gateway_service_pb2 as gw
from tests.conftest import link_bundle
from tests.integration.conftest import free_port, replace_with_new_version, scrape, start, subset

# The served catalogue: enough items for a meaningful ranking, few enough to encode quickly twice (start
# and hot swap) on a small CI machine. The offline side uses the same items (a split of the same subset).
N_ITEMS = 400

pytest.importorskip("torch", reason="training needs the training extra")
# Training, export and two full encodings of the served catalogue: minutes on a small shared CI machine.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory, ml100k) -> Path:
    """An evaluation bundle made by the `lmrec train --holdout` entry point with the tiny CI configuration."""
    from lmrec_data.datasets import resolve_data_path
    from training.train import main

    out = tmp_path_factory.mktemp("trained") / "lmrec-tiny"
    assert main(["--config", "tiny", "--holdout", "--data", str(resolve_data_path()), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def split(ml100k):
    from training.split import SplitConfig, build_split

    return build_split(ml100k, SplitConfig())


@pytest.fixture(scope="module")
def served_split(ml100k):
    from training.split import SplitConfig, build_split

    return build_split(subset(ml100k, N_ITEMS), SplitConfig())


@pytest.fixture(scope="module")
def trained_system(tmp_path_factory, tiny_bundle, ml100k):
    watched = tmp_path_factory.mktemp("watched") / "bundle"
    link_bundle(tiny_bundle, watched)
    gateway_metrics = free_port()
    system = start(tmp_path_factory.mktemp("system"), watched, subset(ml100k, N_ITEMS),
                   # FP32: INT8 quantises activations per batch, so an item's INT8 vector depends on which
                   # texts it was encoded with; FP32 makes served and offline comparable to float rounding.
                   extra_args={"ranking": ["--reload-interval-s", "1", "--precision", "fp32"],
                               "gateway": ["--metrics-port", str(gateway_metrics)]})
    system.gateway_metrics_port = gateway_metrics
    yield system, watched
    system.close()


def test_bundle_manifest_records_parity_and_index_params(tiny_bundle, split):
    manifest = load_manifest(tiny_bundle)
    assert manifest.ranker_kind == "lm_seq"
    assert manifest.data_fingerprint == split.fingerprint
    assert set(manifest.models) == {"encoder", "item_tower", "context"}
    assert all(set(by_precision) == {"fp32", "int8", "fp16"} for by_precision in manifest.models.values())
    parity = manifest.parity
    assert parity["encoder_fp32_vs_torch_min_cosine"] > 0.9999
    assert parity["encoder_int8_vs_torch_min_cosine"] > 0.9
    assert parity["item_tower_fp32_vs_torch_max_abs"] < 1e-4
    assert parity["context_fp32_vs_torch_max_abs"] < 1e-4
    ranking = parity["ranking"]
    assert ranking["fp32_vs_torch_max_abs_score_diff"] < 1e-3
    assert ranking["fp32_ndcg@10"] == pytest.approx(ranking["torch_ndcg@10"], abs=1e-6)
    assert "int8_ndcg@10" in ranking
    # Raw heads add the text-only flag (weighted by the calibrated cold bias) and a norm-equalising coordinate.
    extra = 0 if manifest.hyperparameters["unit"] else 2
    calibration = manifest.hyperparameters["cold_calibration"]
    assert manifest.hyperparameters["cold_bias"] == calibration["chosen"]["bias"]
    assert len(calibration["curve"]) > 1 and calibration["held_out_items"] > 0 and calibration["cold_users"] > 0
    # INT8 as served: catalogue items ride on the training-time FP32 text vectors and the small towers run
    # their FP32 graphs, so the ranking is FP32's.
    assert manifest.model_file("context", "int8").path == manifest.model_file("context", "fp32").path
    assert manifest.model_file("item_tower", "int8").path == manifest.model_file("item_tower", "fp32").path
    assert ranking["int8_vs_fp32_max_abs_score_diff"] < 1e-5
    # Where the INT8 encoder does act (every item text re-encoded, as for items upserted after training).
    assert "reencoded_int8_ndcg@10" in ranking and "reencoded_fp32_ndcg@10" in ranking
    assert abs(ranking["reencoded_int8_vs_fp32_ndcg_rel_diff"]) < 0.5
    assert manifest.index_params["dimension"] == manifest.hyperparameters["dim"] + manifest.encoder.dimension + extra
    vectors = np.load(tiny_bundle / "item_vectors.npy")
    if extra:
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), np.sqrt(manifest.hyperparameters["max_norm"] ** 2 + 1),
                                   rtol=1e-4)
    ids = json.loads((tiny_bundle / "item_ids.json").read_text())
    assert len(ids) == np.load(tiny_bundle / "id_embeddings.npy").shape[0]
    assert not set(ids) & {split.item_ids[i] for i in np.flatnonzero(split.cold_items)}, "cold items have no id embedding"
    assert np.load(tiny_bundle / "item_vectors.npy").shape == (split.n_items, manifest.served_dimension)
    assert np.load(tiny_bundle / "text_embeddings.npy").shape == (split.n_items, manifest.encoder.dimension)
    flags = vectors[:, -2] if extra else None
    if extra:
        cold = np.array([i not in set(ids) for i in split.item_ids])
        np.testing.assert_array_equal(flags, cold.astype(np.float32), "the flag marks exactly the text-only items")


def assert_same_ranking(served: list[int], offline_scores: np.ndarray, k: int, tie: float = 1e-5) -> None:
    """The served top k is the offline top k, up to the order of items whose offline scores tie.

    Float32 sums differ in the last bits with the micro-batch the query text was encoded in (another
    padding width, another GEMM blocking), so two items a hair apart may swap; anything more is a bug.
    """
    offline_top = np.argsort(-offline_scores, kind="stable")[:k]
    assert len(served) == k
    np.testing.assert_allclose(offline_scores[served], offline_scores[offline_top], atol=tie,
                               err_msg=f"served {served} vs offline {list(offline_top)}")
    assert len(set(served)) == k


def test_served_ranking_equals_offline_ranking(trained_system, tiny_bundle, served_split):
    from training.lm_scores import BundleScorer
    from training.metrics import mask_history
    from training.remote_eval import ServedRecommender

    system, _ = trained_system
    split = served_split
    users = np.arange(12)
    offline = BundleScorer(tiny_bundle, "fp32", split, "test").score(users)
    mask_history(offline, split.history_matrix("test"), users)
    history = split.history_sequences("test")
    version = load_manifest(tiny_bundle).model_version
    for row, u in enumerate(users[:4]):
        recent = [split.item_ids[i] for i in history[u]]
        reply = system.stub.Recommend(gw.RecommendRequest(user_id=f"check-{u}", k=10, recent_item_ids=recent), timeout=30)
        assert not reply.degraded and reply.source == "ranked" and reply.model_version == version
        top = np.argsort(-offline[row], kind="stable")[:10]
        index = {item_id: i for i, item_id in enumerate(split.item_ids)}
        assert_same_ranking([index[i.item_id] for i in reply.items], offline[row], 10)
        np.testing.assert_allclose([i.score for i in reply.items], offline[row, top], atol=1e-4)

    served = ServedRecommender(system.gateway_address)
    served.fit(split, "test")
    got = served.score(users)
    assert served.degraded == 0 and served.model_versions == {version}
    for row in range(len(users)):
        assert_same_ranking(list(np.argsort(-got[row], kind="stable")[:20]), offline[row], 20)


def test_bundle_carries_a_rating_head_fitted_on_its_own_trunk(tiny_bundle):
    from training.rating_export import export_config

    manifest = load_manifest(tiny_bundle)
    assert (tiny_bundle / manifest.extra_files["rating_head"]).is_file()
    recorded = manifest.hyperparameters["rating_head"]
    assert recorded["config"] == export_config(tiny=True).as_dict() and recorded["epochs"] == recorded["config"]["epochs"]
    assert manifest.metrics["rating_head"]["ratings"] > 50_000 and manifest.metrics["rating_head"]["bounds"] == [1.0, 5.0]
    assert manifest.parity["rating_head_served_vs_offline_max_abs"] < 1e-9


def _rated_user(ml100k, served_split, row: int) -> tuple[str, list[str], list[float]]:
    """A served user's whole ML-100K history (items outside the served catalogue too) with its ratings,
    less the served items rated below 3: those would be negatives, whose serving-time penalty the offline
    side leaves out. Low ratings of the other items stay: they reach the user's rating offset only."""
    served = set(served_split.item_ids)
    user = served_split.user_ids[row]
    events = [e for e in ml100k.histories()[user] if not (e.item_id in served and e.rating < 3)]
    return user, [e.item_id for e in events], [float(e.rating) for e in events]


def test_served_predicted_ratings_and_blend_equal_offline(trained_system, tiny_bundle, split, served_split, ml100k):
    """The gateway sends the stored ratings, the ranking tier predicts with the bundle's head: each served
    predicted_rating is RatingHead.predict offline, and a weighted answer is ordered by combined_scores
    over the same candidates (retrieval's top num_candidates: an exact scan of equal-norm vectors, so the
    offline score order)."""
    from gateway.settings import GatewaySettings
    from ranking_service.ranker import RankContext
    from ranking_service.rating_head import RatingHead, combined_scores
    from training.lm_scores import BundleScorer
    from training.rating_export import BundleTrunk

    system, _ = trained_system
    manifest = load_manifest(tiny_bundle)
    with np.load(tiny_bundle / manifest.extra_files["rating_head"]) as saved:
        head = RatingHead.from_state(saved)
    trunk = BundleTrunk(Bundle(tiny_bundle, manifest), split)
    full = {item_id: i for i, item_id in enumerate(split.item_ids)}
    scorer = BundleScorer(tiny_bundle, "fp32", served_split, "test")
    served = {item_id: i for i, item_id in enumerate(served_split.item_ids)}
    num_candidates = GatewaySettings.model_fields["num_candidates"].default
    weight = 1.0
    checked = 0
    for row in range(4):
        user, items, ratings = _rated_user(ml100k, served_split, row)
        name = f"rated-{user}"
        system.stub.RecordFeedback(gw.RecordFeedbackRequest(events=[
            gw.FeedbackEvent(user_id=name, item_id=i, event_type=gw.EVENT_TYPE_RATING, value=r)
            for i, r in zip(items, ratings)]), timeout=60)
        # Offline, from what the ranking tier is told: the items rated >= 3, in order, are the history (the
        # gateway's window of them), of which the ranker reads the last max_len it knows (the served
        # catalogue's); every rating feeds the offset.
        history = [i for i, r in zip(items, ratings) if r >= 3][-GatewaySettings.model_fields["history_window"].default:]
        known = [full[i] for i in history[-trunk.max_len:] if i in served]
        context = trunk.encode([np.array(known)]) if known else np.zeros((1, trunk.dim), np.float32)
        offset = head.offsets([np.array([full[i] for i in items])], [np.array(ratings)])
        predicted = head.predict(context, offset, trunk.item_vectors)[0][[full[i] for i in served_split.item_ids]]
        ctx = scorer.ranker.context_vector(RankContext(name, history), None)
        next_item = (scorer.items @ ctx).astype(np.float64)
        next_item[[served[i] for i in items if i in served]] = -np.inf  # seen: never recommended
        candidates = np.argsort(-next_item, kind="stable")[:num_candidates]
        candidates = candidates[np.isfinite(next_item[candidates])]
        blended = np.full(len(next_item), -np.inf)
        blended[candidates] = combined_scores(next_item[candidates], predicted[candidates], weight)

        request = dict(user_id=name, k=10, exclude_item_ids=["new-2031"])  # an item another test may upsert
        plain = system.stub.Recommend(gw.RecommendRequest(**request), timeout=30)
        weighted = system.stub.Recommend(gw.RecommendRequest(**request, rating_weight=weight), timeout=30)
        zero = system.stub.Recommend(gw.RecommendRequest(**request, rating_weight=0.0), timeout=30)
        for reply in (plain, weighted, zero):
            assert not reply.degraded and reply.source == "ranked"
            assert all(i.HasField("predicted_rating") for i in reply.items)
            got = np.array([i.predicted_rating for i in reply.items])
            np.testing.assert_allclose(got, predicted[[served[i.item_id] for i in reply.items]], atol=1e-4)
        assert plain.rating_weight == 0.0 and zero.rating_weight == 0.0 and weighted.rating_weight == weight
        assert [i.item_id for i in zero.items] == [i.item_id for i in plain.items]  # weight 0: as before
        assert_same_ranking([served[i.item_id] for i in plain.items], next_item, 10)
        assert_same_ranking([served[i.item_id] for i in weighted.items], blended, 10, tie=1e-4)
        np.testing.assert_allclose([i.score for i in weighted.items],
                                   np.sort(blended)[::-1][:10], atol=1e-3)
        checked += [i.item_id for i in weighted.items] != [i.item_id for i in plain.items]
    assert checked, "a weight of 1 changed no answer: the blend did not reach the order"


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_a_bad_rating_weight_is_invalid_argument_naming_the_field(trained_system, weight):
    system, _ = trained_system
    with pytest.raises(grpc.RpcError) as caught:
        system.stub.Recommend(gw.RecommendRequest(user_id="1", k=5, rating_weight=weight), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("rating_weight")


def test_new_item_is_served_from_its_text(trained_system, ml100k):
    system, _ = trained_system
    text = "Moonlight Harbour (2031) Genres: Animation, Children's, Musical."
    system.stub.UpsertItems(gw.UpsertItemsRequest(items=[
        common_pb2.Item(item_id="new-2031", title="Moonlight Harbour (2031)", text=text,
                        attributes={"genre": common_pb2.AttributeValues(values=["Animation"])})]), timeout=30)
    reply = system.stub.Recommend(gw.RecommendRequest(user_id="1", k=10, query=text), timeout=30)
    assert not reply.degraded
    assert "new-2031" in [i.item_id for i in reply.items]


def test_new_item_slots_reserve_places_for_text_only_items(trained_system, tiny_bundle, served_split):
    system, _ = trained_system
    manifest = load_manifest(tiny_bundle)
    with_ids = set(json.loads((tiny_bundle / manifest.extra_files["item_ids"]).read_text()))
    history = served_split.history_sequences("test")[0]
    request = dict(user_id="slots-user", k=10, recent_item_ids=[served_split.item_ids[i] for i in history])
    plain = system.stub.Recommend(gw.RecommendRequest(**request), timeout=30)
    plain_ids = [i.item_id for i in plain.items]
    slots = sum(i not in with_ids for i in plain_ids) + 2
    slotted = system.stub.Recommend(gw.RecommendRequest(**request, new_item_slots=slots), timeout=30)
    ids = [i.item_id for i in slotted.items]
    assert not slotted.degraded and len(ids) == 10
    assert sum(i not in with_ids for i in ids) == slots
    # Text-only items below the plain top 10 took the places of its lowest-ranked others, at the end.
    extra = [n for n, i in enumerate(ids) if i not in plain_ids]
    assert len(extra) == 2 and extra == [8, 9] and all(ids[n] not in with_ids for n in extra)
    assert ids[:8] == [i for i in plain_ids if i in ids]
    assert all(gw.REASON_KIND_NEW_ITEM in [r.kind for r in slotted.items[n].reasons] for n in extra)
    assert slotted.items[8].score >= slotted.items[9].score
    assert [i.item_id for i in system.stub.Recommend(gw.RecommendRequest(**request, new_item_slots=0),
                                                     timeout=30).items] == plain_ids
    samples = scrape(system.gateway_metrics_port)
    assert samples[("lmrec_gateway_new_item_slots_total", frozenset({("outcome", "asked")}))] == slots
    assert samples[("lmrec_gateway_new_item_slots_total", frozenset({("outcome", "filled")}))] == slots


def test_free_text_request_steers_a_cold_user(trained_system, ml100k):
    system, _ = trained_system
    genres = {i.item_id: set(i.attributes.get("genre", [])) for i in ml100k.items[:N_ITEMS]}
    reply = system.stub.Recommend(gw.RecommendRequest(user_id="cold-user-x", k=10,
                                                      query="an animated movie for young children"), timeout=30)
    hits = sum(bool(genres.get(i.item_id, set()) & {"Animation", "Children's"}) for i in reply.items)
    assert hits >= 5, [i.title for i in reply.items]


def test_hot_swap_keeps_every_call_succeeding(trained_system, tiny_bundle, tmp_path):
    system, watched = trained_system
    old_version = load_manifest(watched).model_version
    errors, versions, stop = [], [], threading.Event()

    def hammer() -> None:
        with gateway_channel(system.gateway_address) as channel:
            from lmrec.v1 import gateway_service_pb2_grpc as gw_grpc

            stub = gw_grpc.GatewayServiceStub(channel)
            while not stop.is_set():
                try:
                    reply = stub.Recommend(gw.RecommendRequest(user_id="1", k=10), timeout=10)
                    versions.append(reply.model_version)
                except grpc.RpcError as exc:
                    errors.append(exc.code())

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        # A "newly trained" bundle: same weights, new version, swapped in the way `lmrec train` does it.
        new_version = replace_with_new_version(watched, tiny_bundle, tmp_path)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not versions or versions[-1] != new_version):
            time.sleep(0.5)
        time.sleep(2)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not errors, errors
    assert versions and versions[0] == old_version and versions[-1] == new_version
    reply = system.stub.Recommend(gw.RecommendRequest(user_id="1", k=10), timeout=30)
    assert not reply.degraded and reply.model_version == new_version


def test_a_purchase_weighs_more_than_a_view_in_the_trained_ranker(trained_system, served_split):
    """The event weights reach the trained model (its event-weighted blend): the purchased item is cited
    as the reason more often, and never less, than the same item merely viewed."""
    system, _ = trained_system
    history = [served_split.item_ids[i] for i in served_split.history_sequences("test")[3][-12:]]
    target = history[0]
    cited = {}
    for name, event_type in (("view", gw.EVENT_TYPE_VIEW), ("purchase", gw.EVENT_TYPE_PURCHASE)):
        user = f"weights-{name}"
        system.stub.RecordFeedback(gw.RecordFeedbackRequest(events=[
            gw.FeedbackEvent(user_id=user, item_id=i, event_type=event_type if i == target else gw.EVENT_TYPE_CLICK)
            for i in history]), timeout=30)
        reply = system.stub.Recommend(gw.RecommendRequest(user_id=user, k=20), timeout=30)
        cited[name] = (sum(r.item_id == target for i in reply.items for r in i.reasons),
                       [round(i.score, 5) for i in reply.items])
    assert cited["purchase"][1] != cited["view"][1]
    assert cited["purchase"][0] >= cited["view"][0]


def test_a_bundle_from_before_recorded_layouts_serves_exactly_like_its_recorded_twin(tiny_bundle, tmp_path):
    """A format-1 manifest (no vector_layout, as every bundle written before it) gets its layout derived
    from its hyperparameters; the ranker built from it must combine contexts exactly as from the record."""
    from ranking_service.item_store import ItemStore
    from ranking_service.onnx_session import RuntimeChoice
    from ranking_service.ranker import RankerOptions
    from ranking_service.seq_ranker import SequenceRanker

    recorded = Bundle.load(tiny_bundle)
    assert recorded.manifest.vector_layout is not None and recorded.manifest.format_version == 2
    legacy_dir = link_bundle(tiny_bundle, tmp_path / "legacy")
    raw = json.loads((legacy_dir / "manifest.json").read_text())
    raw.pop("vector_layout")
    raw["format_version"] = 1
    (legacy_dir / "manifest.json").write_text(json.dumps(raw))
    legacy = Bundle.load(legacy_dir)
    assert legacy.manifest.vector_layout is None and legacy.layout == recorded.layout
    assert recorded.layout.trailing, "the default configuration serves trailing coordinates; the check needs them"

    runtime = RuntimeChoice("fp32", ["CPUExecutionProvider"])
    rankers = [SequenceRanker(bundle, ItemStore(tmp_path / f"{name}.sqlite", bundle.manifest.served_dimension,
                                                bundle.model_version), runtime, RankerOptions())
               for name, bundle in (("recorded", recorded), ("legacy", legacy))]
    rng = np.random.default_rng(0)
    interest = rng.normal(size=rankers[0].dim).astype(np.float32)
    query = rng.normal(size=recorded.manifest.encoder.dimension).astype(np.float32)
    for args in ((interest, None), (None, query), (interest, query)):
        np.testing.assert_array_equal(rankers[0].combine(*args), rankers[1].combine(*args))
    assert rankers[0].vector_dimension == rankers[1].vector_dimension == recorded.manifest.served_dimension
