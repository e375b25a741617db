"""Killing and restarting processes: degraded answers, UNAVAILABLE, and durability of acknowledged writes."""

from __future__ import annotations

import signal

import grpc
import pytest

from lmrec.v1 import common_pb2, gateway_service_pb2 as gw
from lmrec.v1 import retrieval_service_pb2 as rt, retrieval_service_pb2_grpc as rt_grpc

pytestmark = pytest.mark.integration


def test_ranking_down_gives_degraded_answer_in_retrieval_order(small_system_factory):
    system = small_system_factory()
    healthy = system.stub.Recommend(gw.RecommendRequest(user_id="1", k=10), timeout=10)
    assert not healthy.degraded
    system.group.stop("ranking", sig=signal.SIGKILL)
    response = system.stub.Recommend(gw.RecommendRequest(user_id="1", k=10), timeout=10)
    assert response.degraded and "ranking" in response.degraded_reason
    assert response.source == "retrieval" and len(response.items) == 10
    # Retrieval order: what retrieval alone returns for the same fallback query (the items the user liked;
    # ratings below 3 are negatives), best first, every item the user had excluded.
    events = system.stub.GetUserHistory(gw.GetUserHistoryRequest(user_id="1"), timeout=10).events
    history = [e.item_id for e in events]
    liked = [e.item_id for e in events if e.value >= 3]
    assert len(liked) < len(history)
    with grpc.insecure_channel(system.group.services["retrieval-0"].address) as channel:
        direct = rt_grpc.RetrievalServiceStub(channel).Search(rt.SearchRequest(
            query_item_ids=liked[-50:], k=10, exclude_item_ids=sorted(set(history))), timeout=10)
    assert [i.item_id for i in response.items] == [r.item_id for r in direct.results]
    scores = [i.score for i in response.items]
    assert scores == sorted(scores, reverse=True)
    assert all(i.reasons and i.reasons[0].text for i in response.items)  # degraded answers explain too
    cold = system.stub.Recommend(gw.RecommendRequest(user_id="nobody", k=5, query="space"), timeout=10)
    assert cold.degraded and cold.source == "popularity" and len(cold.items) == 5
    assert all(gw.REASON_KIND_POPULAR in [r.kind for r in i.reasons] for i in cold.items)


def test_retrieval_down_is_unavailable(small_system_factory):
    system = small_system_factory()
    system.group.stop("retrieval-0", sig=signal.SIGKILL)
    with pytest.raises(grpc.RpcError) as info:
        system.stub.Recommend(gw.RecommendRequest(user_id="1", k=10), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_acknowledged_feedback_and_items_survive_a_restart_of_everything(small_system_factory):
    system = small_system_factory()
    before = system.stub.Recommend(gw.RecommendRequest(user_id="5", k=10), timeout=10)
    rated = before.items[0].item_id
    system.stub.RecordFeedback(gw.RecordFeedbackRequest(events=[
        gw.FeedbackEvent(user_id="5", item_id=rated, event_type=gw.EVENT_TYPE_RATING, value=4)]), timeout=10)
    system.stub.UpsertItems(gw.UpsertItemsRequest(items=[common_pb2.Item(
        item_id="kept-1", title="Glacier Kayak Diaries (2026)",
        text="Glacier Kayak Diaries (2026). Kayaking between glaciers in Greenland. Genres: Documentary.")]), timeout=30)
    system.restart()
    history = system.stub.GetUserHistory(gw.GetUserHistoryRequest(user_id="5"), timeout=10)
    assert rated in [e.item_id for e in history.events]
    after = system.stub.Recommend(gw.RecommendRequest(user_id="5", k=10), timeout=10)
    assert rated not in [i.item_id for i in after.items] and not after.degraded
    found = system.stub.Recommend(gw.RecommendRequest(user_id="x", k=5, query="kayaking between glaciers"), timeout=10)
    assert "kept-1" in [i.item_id for i in found.items]


def test_sigterm_stops_the_gateway_cleanly(small_system_factory):
    system = small_system_factory()
    process = system.group.services["gateway"].process
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0


def test_two_shards_split_the_catalogue_and_a_lost_shard_degrades(small_system_factory):
    system = small_system_factory(shards=2)
    counts = []
    for shard in ("retrieval-0", "retrieval-1"):
        with grpc.insecure_channel(system.group.services[shard].address) as channel:
            counts.append(rt_grpc.RetrievalServiceStub(channel).GetStats(rt.GetStatsRequest(), timeout=10).item_count)
    assert sum(counts) == 300 and min(counts) > 100  # a stable hash spreads items over both shards
    whole = system.stub.Recommend(gw.RecommendRequest(user_id="1", k=10), timeout=10)
    assert not whole.degraded and len(whole.items) == 10
    system.group.stop("retrieval-1", sig=signal.SIGKILL)
    partial = system.stub.Recommend(gw.RecommendRequest(user_id="1", k=10), timeout=10)
    assert partial.degraded and "shard 1" in partial.degraded_reason and len(partial.items) == 10
