"""Issue 2 behaviours against the real three-process system with ML-100K loaded."""

from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lmrec.bundle import Bundle
from lmrec.v1 import common_pb2, gateway_service_pb2 as gw
from lmrec.v1 import ranking_service_pb2 as rk
from lmrec.v1 import ranking_service_pb2_grpc as rk_grpc
from ranking_service.onnx_session import RuntimeChoice
from ranking_service.text_encoder import TextEncoder

pytestmark = pytest.mark.integration

KIDS = {"Animation", "Children's"}


def recommend(system, timeout=10, **kwargs) -> gw.RecommendResponse:
    return system.stub.Recommend(gw.RecommendRequest(**kwargs), timeout=timeout)


def genres(ml100k, item_id) -> set[str]:
    return set(next(i for i in ml100k.items if i.item_id == item_id).attributes.get("genre", []))


def fresh_user() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def test_known_user_gets_k_distinct_unseen_items_in_score_order(lmrec_system, ml100k):
    seen = {x.item_id for x in ml100k.interactions if x.user_id == "1"}
    response = recommend(lmrec_system, user_id="1", k=10)
    ids = [i.item_id for i in response.items]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert not set(ids) & seen
    scores = [i.score for i in response.items]
    assert scores == sorted(scores, reverse=True)
    assert not response.degraded and response.source == "ranked"
    assert response.model_version.startswith("all-MiniLM-L6-v2")
    assert all(i.title for i in response.items)
    assert {t.stage for t in response.timings} >= {"history", "encode_context", "retrieval", "rank"}


@pytest.mark.parametrize("query, wanted, at_least", [
    ("animated movie for young children", KIDS, 6),
    ("scary horror movie", {"Horror"}, 6),
    ("science fiction space adventure", {"Sci-Fi"}, 6),
    ("a western with cowboys", {"Western"}, 5),
])
def test_free_text_request_finds_matching_genres(lmrec_system, ml100k, query, wanted, at_least):
    for user in ("1", fresh_user()):
        response = recommend(lmrec_system, user_id=user, k=10, query=query)
        hits = sum(bool(genres(ml100k, i.item_id) & wanted) for i in response.items)
        assert hits >= at_least, (user, query, [i.title for i in response.items])


def test_attribute_filter_is_honoured(lmrec_system, ml100k):
    response = recommend(lmrec_system, user_id="7", k=20,
                         filters=[common_pb2.AttributeFilter(key="genre", values=["Animation"])])
    assert len(response.items) == 20
    assert all("Animation" in genres(ml100k, i.item_id) for i in response.items)


def test_exclusions_and_recent_items_are_never_returned(lmrec_system):
    first = [i.item_id for i in recommend(lmrec_system, user_id="13", k=10).items]
    again = recommend(lmrec_system, user_id="13", k=10, exclude_item_ids=first[:5], recent_item_ids=first[5:])
    assert not {i.item_id for i in again.items} & set(first)


def test_cold_user_without_query_gets_popular_items(lmrec_system):
    response = recommend(lmrec_system, user_id=fresh_user(), k=10)
    assert len(response.items) == 10
    assert response.source == "popularity" and not response.degraded
    assert "Star Wars (1977)" in [i.title for i in response.items]


def test_feedback_removes_item_and_shapes_next_answer(lmrec_system):
    user = fresh_user()
    first = recommend(lmrec_system, user_id=user, k=10, query="animated movie for young children")
    rated = first.items[0].item_id
    ack = lmrec_system.stub.RecordFeedback(gw.RecordFeedbackRequest(events=[
        gw.FeedbackEvent(user_id=user, item_id=rated, event_type=gw.EVENT_TYPE_RATING, value=5)]), timeout=10)
    assert ack.accepted_count == 1
    history = lmrec_system.stub.GetUserHistory(gw.GetUserHistoryRequest(user_id=user), timeout=10)
    assert [e.item_id for e in history.events] == [rated]
    after = recommend(lmrec_system, user_id=user, k=10)
    assert rated not in {i.item_id for i in after.items}
    assert after.source == "ranked"  # one rating turns a cold user into a personalised one


def test_upserted_item_is_recommendable_at_once(lmrec_system):
    item_id = f"new-{uuid.uuid4().hex[:8]}"
    lmrec_system.stub.UpsertItems(gw.UpsertItemsRequest(items=[common_pb2.Item(
        item_id=item_id, title="Penguins of the Antarctic Ice (2026)",
        text="Penguins of the Antarctic Ice (2026). A nature documentary about emperor penguins surviving "
             "the antarctic winter on the ice. Genres: Documentary.",
        attributes={"genre": common_pb2.AttributeValues(values=["Documentary"])})]), timeout=30)
    response = recommend(lmrec_system, user_id=fresh_user(), k=10, query="documentary about penguins in antarctica")
    assert item_id in [i.item_id for i in response.items][:3]
    got = lmrec_system.stub.GetItems(gw.GetItemsRequest(item_ids=[item_id, "no-such-item"]), timeout=10)
    assert got.items[0].title.startswith("Penguins") and list(got.missing_item_ids) == ["no-such-item"]
    lmrec_system.stub.DeleteItems(gw.DeleteItemsRequest(item_ids=[item_id]), timeout=30)
    response = recommend(lmrec_system, user_id=fresh_user(), k=10, query="documentary about penguins in antarctica")
    assert item_id not in [i.item_id for i in response.items]


def test_user_data_can_be_erased(lmrec_system):
    user = fresh_user()
    lmrec_system.stub.RecordFeedback(gw.RecordFeedbackRequest(events=[
        gw.FeedbackEvent(user_id=user, item_id="50", event_type=gw.EVENT_TYPE_CLICK),
        gw.FeedbackEvent(user_id=user, item_id="181", event_type=gw.EVENT_TYPE_VIEW)]), timeout=10)
    erased = lmrec_system.stub.DeleteUserData(gw.DeleteUserDataRequest(user_id=user), timeout=10)
    assert erased.deleted_event_count == 2
    assert not lmrec_system.stub.GetUserHistory(gw.GetUserHistoryRequest(user_id=user), timeout=10).events


BAD_RECOMMENDS = [
    (dict(user_id="1", k=0), "k"),
    (dict(user_id="1", k=1001), "k"),
    (dict(user_id="", k=10), "user_id"),
    (dict(user_id="u" * 300, k=10), "user_id"),
    (dict(user_id="1", k=10, query="q" * 3000), "query"),
    (dict(user_id="1", k=10, exclude_item_ids=[""]), "exclude_item_ids[0]"),
    (dict(user_id="1", k=10, exclude_item_ids=["x"] * 20_001), "exclude_item_ids"),
    (dict(user_id="1", k=10, filters=[common_pb2.AttributeFilter(key="genre")]), "filters[0].values"),
    (dict(user_id="1", k=5, new_item_slots=6), "new_item_slots"),
    (dict(user_id="1", k=5, new_item_slots=-1), "new_item_slots"),
]


@pytest.mark.parametrize("kwargs, field", BAD_RECOMMENDS)
def test_bad_recommend_input_is_invalid_argument_naming_the_field(lmrec_system, kwargs, field):
    with pytest.raises(grpc.RpcError) as info:
        recommend(lmrec_system, **kwargs)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field), info.value.details()


def test_bad_writes_are_invalid_argument_naming_the_field(lmrec_system):
    stub = lmrec_system.stub
    cases = [
        (lambda: stub.UpsertItems(gw.UpsertItemsRequest(), timeout=10), "items"),
        (lambda: stub.UpsertItems(gw.UpsertItemsRequest(items=[common_pb2.Item(item_id="x")]), timeout=10), "items[0].text"),
        (lambda: stub.UpsertItems(gw.UpsertItemsRequest(items=[common_pb2.Item(item_id="x", title="t")] * 1001), timeout=10),
         "items"),
        (lambda: stub.RecordFeedback(gw.RecordFeedbackRequest(events=[gw.FeedbackEvent(user_id="1", item_id="2")]),
                                     timeout=10), "events[0].event_type"),
        (lambda: stub.RecordFeedback(gw.RecordFeedbackRequest(events=[gw.FeedbackEvent(
            user_id="1", item_id="", event_type=gw.EVENT_TYPE_CLICK)]), timeout=10), "events[0].item_id"),
        (lambda: stub.RecordFeedback(gw.RecordFeedbackRequest(events=[gw.FeedbackEvent(
            user_id="1", item_id="2", event_type=gw.EVENT_TYPE_CLICK)] * 10_001), timeout=10), "events"),
        (lambda: stub.DeleteItems(gw.DeleteItemsRequest(), timeout=10), "item_ids"),
    ]
    for call, field in cases:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert info.value.details().startswith(field), (field, info.value.details())
    # The server is still alive and well after all that.
    assert len(recommend(lmrec_system, user_id="1", k=5).items) == 5


def test_every_service_reports_serving_and_reflects_its_services(lmrec_system):
    expected = {
        "gateway": "lmrec.v1.GatewayService",
        "ranking": "lmrec.v1.RankingService",
        "retrieval-0": "lmrec.v1.RetrievalService",
    }
    for name, service in expected.items():
        address = lmrec_system.group.services[name].address
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for target in ("", service):
                status = health.Check(health_pb2.HealthCheckRequest(service=target), timeout=5).status
                assert status == health_pb2.HealthCheckResponse.SERVING, (name, target)
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            answer = next(reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
            names = {s.name for s in answer.list_services_response.service}
            assert {service, "grpc.health.v1.Health"} <= names, (name, names)


def test_int8_worker_encodes_item_texts_in_fp32_and_queries_in_int8(lmrec_system, bundle_dir):
    """Item vectors live for the model's life, so the CPU worker keeps INT8's error out of them; only the
    per-request query path runs the INT8 encoder."""
    texts = ["A quiet documentary about penguins in Antarctica (2005)", "Space opera with laser swords"]
    runtime = {p: RuntimeChoice(p, ["CPUExecutionProvider"]) for p in ("fp32", "int8")}
    bundle = Bundle.load(bundle_dir)
    encoders = {p: TextEncoder(bundle, r, 1, 1) for p, r in runtime.items()}
    offline = {p: e.encode(texts) for p, e in encoders.items()}
    # INT8 quantises activations per batch: the served query ran alone, so it is compared alone.
    offline_query = encoders["int8"].encode(texts[:1])[0]
    with grpc.insecure_channel(lmrec_system.group.services["ranking"].address) as channel:
        stub = rk_grpc.RankingServiceStub(channel)
        info = stub.GetModelInfo(rk.GetModelInfoRequest(), timeout=10)
        assert (info.precision, info.item_precision) == ("int8", "fp32")
        served = stub.Encode(rk.EncodeRequest(inputs=[rk.EncodeInput(text=t) for t in texts]), timeout=30)
        items = np.array([v.values for v in served.vectors], dtype=np.float32)
        query = np.array(stub.EncodeContext(rk.EncodeContextRequest(
            context=common_pb2.UserContext(query=texts[0])), timeout=30).vector, dtype=np.float32)
    np.testing.assert_allclose(items, offline["fp32"], atol=1e-5)
    assert np.abs(items - offline["int8"]).max() > 1e-3  # the INT8 encoder would have given other vectors
    np.testing.assert_allclose(query, offline_query, atol=1e-5)
