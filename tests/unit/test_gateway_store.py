"""The gateway's durable store: the feedback Recommend reads matches the events, in order, from the
covering index; popularity counts interest only; clicks join to the request that showed them."""

from __future__ import annotations

from gateway.policy.feedback import CLICK, DISMISS, PURCHASE, RATING, VIEW
from gateway.store import Event, GatewayStore


def test_feedback_follows_the_events_in_time_order_from_the_covering_index(tmp_path):
    store = GatewayStore(tmp_path / "gateway.sqlite")
    # Out of order on arrival, one timestamp shared: time first, then arrival.
    store.record_events([Event("u", "b", 1, 1.0, 2000), Event("u", "a", 1, 1.0, 1000), Event("v", "x", 1, 1.0, 500),
                         Event("u", "c", 5, 0.0, 2000), Event("u", "a", 3, 4.0, 3000)])
    assert store.feedback("u") == [("a", 1, 1.0), ("b", 1, 1.0), ("c", 5, 0.0), ("a", 3, 4.0)]
    assert [item for item, _, _ in store.feedback("u")] == [e.item_id for e in store.history("u")]
    assert store.feedback("nobody") == []
    plan = " ".join(row[-1] for row in store._db.execute(
        "EXPLAIN QUERY PLAN SELECT item_id, event_type, value FROM events INDEXED BY events_feedback_by_user "
        "WHERE user_id = ? ORDER BY ts_ms, seq", ("u",)))
    assert "COVERING INDEX" in plan, plan
    store.close()


def test_popularity_counts_users_with_interest_never_dismissals_or_low_ratings(tmp_path):
    path = tmp_path / "gateway.sqlite"
    store = GatewayStore(path, negative_rating_below=3.0)
    store.record_events([Event("u1", "a", CLICK, 0.0, 1), Event("u1", "a", VIEW, 0.0, 2),
                         Event("u2", "a", DISMISS, 0.0, 3), Event("u3", "a", RATING, 1.0, 4),
                         Event("u4", "a", RATING, 3.0, 5), Event("u5", "b", DISMISS, 0.0, 6),
                         Event("u6", "c", PURCHASE, 0.0, 7)])
    assert dict(store.popularity) == {"a": 2, "c": 1}
    store.record_events([Event("u2", "a", CLICK, 0.0, 8)])  # a dismisser who later clicks counts once
    assert store.popularity["a"] == 3
    store.close()
    reopened = GatewayStore(path, negative_rating_below=3.0)
    assert dict(reopened.popularity) == {"a": 3, "c": 1}
    assert reopened.delete_user("u2") == 2
    assert dict(reopened.popularity) == {"a": 2, "c": 1}
    reopened.close()


def test_clicks_join_to_their_request_and_a_store_made_before_request_ids_opens(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(str(path))
    old.executescript("""CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,
        item_id TEXT NOT NULL, event_type INTEGER NOT NULL, value REAL NOT NULL, ts_ms INTEGER NOT NULL,
        scenario TEXT NOT NULL);
        INSERT INTO events (user_id, item_id, event_type, value, ts_ms, scenario) VALUES ('u', 'a', 2, 0, 1, '');""")
    old.commit()
    old.close()
    store = GatewayStore(path)
    store.record_events([Event("u", "b", CLICK, 0.0, 2, "", "req-1"), Event("u", "c", DISMISS, 0.0, 3, "", "req-1"),
                         Event("u", "d", CLICK, 0.0, 4, "", "req-2")])
    assert store.clicks_for(["req-1", "req-3"]) == {("req-1", "b")}
    assert [e.request_id for e in store.history("u")] == ["", "req-1", "req-1", "req-2"]
    store.close()
