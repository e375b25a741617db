"""The gateway's durable store: the item-id history Recommend reads matches the events, in order."""

from __future__ import annotations

from gateway.store import Event, GatewayStore


def test_history_item_ids_follow_the_events_in_time_order(tmp_path):
    store = GatewayStore(tmp_path / "gateway.sqlite")
    # Out of order on arrival, one timestamp shared: time first, then arrival.
    store.record_events([Event("u", "b", 1, 1.0, 2000), Event("u", "a", 1, 1.0, 1000), Event("v", "x", 1, 1.0, 500),
                         Event("u", "c", 1, 1.0, 2000), Event("u", "a", 1, 1.0, 3000)])
    assert store.history_item_ids("u") == ["a", "b", "c", "a"] == [e.item_id for e in store.history("u")]
    assert store.history_item_ids("nobody") == []
    plan = " ".join(row[-1] for row in store._db.execute(
        "EXPLAIN QUERY PLAN SELECT item_id FROM events INDEXED BY events_items_by_user WHERE user_id = ? "
        "ORDER BY ts_ms, seq", ("u",)))
    assert "COVERING INDEX" in plan, plan
    store.close()
