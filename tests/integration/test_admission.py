"""Gateway admission control on a real system: past the in-flight limit, Recommend is refused at once with
RESOURCE_EXHAUSTED; nothing else fails, and the admitted calls are answered."""

from __future__ import annotations

import grpc

from lmrec.v1 import gateway_service_pb2 as gw


def test_recommends_past_the_limit_are_refused_at_once(small_system_factory):
    system = small_system_factory(histories=False, extra_args={"gateway": ["--max-in-flight-recommends", "2"]})
    request = gw.RecommendRequest(user_id="burst", k=10, query="a funny animated movie")
    system.stub.Recommend(request, timeout=30)  # warm: the first call loads what later ones reuse
    calls = [system.stub.Recommend.future(request, timeout=30) for _ in range(40)]
    codes = []
    for call in calls:
        try:
            reply = call.result()
            assert len(reply.items) == 10
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
            assert "at capacity: 2 Recommend calls in flight" in exc.details()
            codes.append(exc.code())
    assert codes.count(grpc.StatusCode.OK) >= 2
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 1
    # Capacity comes back: one at a time, every call is admitted.
    for _ in range(5):
        assert len(system.stub.Recommend(request, timeout=30).items) == 10


def test_other_methods_are_not_limited(small_system_factory):
    system = small_system_factory(histories=False, extra_args={"gateway": ["--max-in-flight-recommends", "1"]})
    calls = [system.stub.GetItems.future(gw.GetItemsRequest(item_ids=["1", "2"]), timeout=30) for _ in range(30)]
    assert all(len(call.result().items) == 2 for call in calls)
