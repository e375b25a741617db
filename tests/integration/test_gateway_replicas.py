"""Two gateway replicas on one PostgreSQL database (a real server), one ranking worker and one retrieval
shard: a catalogue change through one reaches the other within its sync interval; feedback through A
shapes B's very next answer; a conversation moves between replicas turn by turn; A killed with SIGKILL
loses nothing it acknowledged, and B keeps serving; with the database gone, writes are UNAVAILABLE
(nothing acknowledged) and Recommend answers degraded from the request alone."""

from __future__ import annotations

import signal
import time

import grpc
import pytest

from lmrec.client import gateway_channel
from lmrec.v1 import gateway_service_pb2 as gw, gateway_service_pb2_grpc as gw_grpc
from tests.integration.conftest import subset

pytestmark = pytest.mark.integration

SYNC_S = 0.1


@pytest.fixture
def replicas(small_system_factory, postgres, ml100k):
    """(system with gateway A, stub of A, stub of B): A takes the database URL as a flag, B from the
    environment, as a Deployment's secret would give it."""
    url = postgres.create_database()
    options = ["--state-sync-s", str(SYNC_S)]
    system = small_system_factory(n_items=120, histories=False,
                                  extra_args={"gateway": ["--database-url", url, *options]})
    gateway_b = system.group.start("gateway-b", "gateway", [
        "--port", "0", "--ranking-address", system.group.services["ranking"].address,
        "--retrieval-addresses", system.group.services["retrieval-0"].address,
        "--state-dir", str(system.layout.state_dir / "gateway-b"), *options],
        env={"LMREC_GATEWAY_DATABASE_URL": url})
    with gateway_channel(gateway_b.address) as channel:
        yield system, system.stub, gw_grpc.GatewayServiceStub(channel)


def wait_for(condition, timeout_s: float = 10.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, "condition not met in time"
        time.sleep(0.02)
    return time.monotonic() - started


def recommend(stub, user: str, **fields) -> gw.RecommendResponse:
    return stub.Recommend(gw.RecommendRequest(user_id=user, k=10, **fields), timeout=30)


def test_catalogue_and_feedback_written_through_one_replica_reach_the_other(replicas, ml100k):
    system, a, b = replicas
    # The catalogue was loaded through A: B holds every item within its sync interval.
    ids = [i.item_id for i in subset(ml100k, 120).items]
    waited = wait_for(lambda: not b.GetItems(gw.GetItemsRequest(item_ids=ids), timeout=10).missing_item_ids)
    assert waited < 5
    a.DeleteItems(gw.DeleteItemsRequest(item_ids=[ids[0]]), timeout=10)
    wait_for(lambda: list(b.GetItems(gw.GetItemsRequest(item_ids=[ids[0]]), timeout=10).missing_item_ids) == [ids[0]])

    before = recommend(b, "u1", recent_item_ids=ids[1:4])
    shown = [i.item_id for i in before.items]
    assert len(shown) == 10 and not before.degraded
    # Feedback through A; B's very next answer reads it (events are read per request, no sync involved).
    a.RecordFeedback(gw.RecordFeedbackRequest(events=[
        gw.FeedbackEvent(user_id="u1", item_id=item, event_type=gw.EVENT_TYPE_CLICK) for item in ids[1:4]] + [
        gw.FeedbackEvent(user_id="u1", item_id=shown[0], event_type=gw.EVENT_TYPE_DISMISS)]), timeout=10)
    after = recommend(b, "u1")
    assert shown[0] not in {i.item_id for i in after.items} and not after.degraded
    assert [e.item_id for e in b.GetUserHistory(gw.GetUserHistoryRequest(user_id="u1"), timeout=10).events] == [
        *ids[1:4], shown[0]]
    # Popularity (the cold-start answer) counts feedback from every replica.
    cold = recommend(a, "someone new")
    assert cold.source == "popularity" or len(cold.items) == 10
    erased = b.DeleteUserData(gw.DeleteUserDataRequest(user_id="u1"), timeout=10)
    assert erased.deleted_event_count == 4
    assert not a.GetUserHistory(gw.GetUserHistoryRequest(user_id="u1"), timeout=10).events


def test_a_conversation_moves_between_replicas(replicas):
    _, a, b = replicas
    first = recommend(a, "talker", session_id="s1", query="a comedy")
    second = recommend(b, "talker", session_id="s1", query="not that one, something older")
    third = recommend(a, "talker", session_id="s1", query="more like the second one")
    assert (first.session_turn, second.session_turn, third.session_turn) == (1, 2, 3)
    assert not {i.item_id for i in first.items[:1]} & {i.item_id for i in second.items}


def test_a_replica_killed_loses_nothing_it_acknowledged_and_the_other_serves(replicas, ml100k):
    system, a, b = replicas
    ids = [i.item_id for i in subset(ml100k, 120).items]
    acknowledged = []
    for n in range(20):
        event = gw.FeedbackEvent(user_id="k", item_id=ids[n], event_type=gw.EVENT_TYPE_CLICK)
        a.RecordFeedback(gw.RecordFeedbackRequest(events=[event]), timeout=10)
        acknowledged.append(ids[n])
    system.group.services["gateway"].process.send_signal(signal.SIGKILL)
    system.group.services["gateway"].process.wait(10)
    history = b.GetUserHistory(gw.GetUserHistoryRequest(user_id="k"), timeout=10)
    assert [e.item_id for e in history.events] == acknowledged
    answer = recommend(b, "k")
    assert len(answer.items) == 10 and not answer.degraded and not set(acknowledged) & {i.item_id for i in answer.items}


def test_without_the_database_writes_are_unavailable_and_recommend_degrades(replicas, postgres, ml100k):
    _, a, b = replicas
    ids = [i.item_id for i in subset(ml100k, 120).items]
    wait_for(lambda: not b.GetItems(gw.GetItemsRequest(item_ids=ids[:5]), timeout=10).missing_item_ids)
    postgres.stop("immediate")
    try:
        with pytest.raises(grpc.RpcError) as refused:
            a.RecordFeedback(gw.RecordFeedbackRequest(events=[
                gw.FeedbackEvent(user_id="d", item_id=ids[0], event_type=gw.EVENT_TYPE_CLICK)]), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE and "state store" in refused.value.details()
        answer = recommend(b, "d", recent_item_ids=ids[:3])
        assert answer.degraded and "stored feedback unavailable" in answer.degraded_reason and len(answer.items) == 10
    finally:
        postgres.start()
    wait_for(lambda: not recommend(b, "d").degraded, timeout_s=30)
    assert not b.GetUserHistory(gw.GetUserHistoryRequest(user_id="d"), timeout=10).events  # the refused write


def test_a_fresh_ranking_replica_is_taught_the_items_it_lacks_and_ranks_as_the_others(replicas, ml100k, bundle_dir):
    """Gateway C talks to a ranking replica started on an empty state directory after the catalogue was
    loaded (a new pod): it knows none of the items, yet C's answers equal A's, undegraded."""
    system, a, _ = replicas
    group = system.group
    fresh = group.start("ranking-fresh", "ranking_service", [
        "--port", "0", "--bundle-dir", str(bundle_dir), "--state-dir", str(system.layout.state_dir / "ranking-fresh")])
    gateway_c = group.start("gateway-c", "gateway", [
        "--port", "0", "--ranking-address", fresh.address,
        "--retrieval-addresses", group.services["retrieval-0"].address,
        "--state-dir", str(system.layout.state_dir / "gateway-c"), "--state-sync-s", str(SYNC_S)],
        env={"LMREC_GATEWAY_DATABASE_URL": system.layout.extra_args["gateway"][1]})
    ids = [i.item_id for i in subset(ml100k, 120).items]
    with gateway_channel(gateway_c.address) as channel:
        c = gw_grpc.GatewayServiceStub(channel)
        wait_for(lambda: not c.GetItems(gw.GetItemsRequest(item_ids=ids), timeout=10).missing_item_ids)
        for user, history in (("h1", ids[5:15]), ("h2", ids[40:43])):
            mine = recommend(c, user, recent_item_ids=history)
            theirs = recommend(a, user, recent_item_ids=history)
            assert not mine.degraded, mine.degraded_reason
            assert [i.item_id for i in mine.items] == [i.item_id for i in theirs.items]
            assert [round(i.score, 4) for i in mine.items] == [round(i.score, 4) for i in theirs.items]
