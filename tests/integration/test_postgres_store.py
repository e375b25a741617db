"""The PostgreSQL state store on a real server: the schema migrates once however many replicas start at
once; two stores on one database (two gateway replicas) read each other's events at once and each
other's catalogue and popularity after a sync; an older write never overwrites a newer one; sessions and
impressions live there too; a lost database is UNAVAILABLE, and the store recovers when it returns."""

from __future__ import annotations

import threading

import pytest

from gateway.conversation.critique import ParsedTurn
from gateway.conversation.sessions import SessionStore, StoredTurn
from gateway.impressions import Impression, ImpressionLog
from gateway.policy.feedback import CLICK, DISMISS, RATING
from gateway.store import Event
from gateway.store.db import PostgresDb
from gateway.store.migrations import MIGRATIONS
from gateway.store.postgres import PostgresStore
from gateway.store.postgres_db import migrate, open_pool
from lmrec.catalog import CatalogItem
from lmrec.errors import DependencyUnavailable

pytestmark = pytest.mark.integration


@pytest.fixture
def database(postgres):
    url = postgres.create_database()
    pools = []

    def pool():
        pools.append(open_pool(url, 4))
        return pools[-1]

    yield pool
    for p in pools:
        p.close()


def item(i: str, title: str = "") -> CatalogItem:
    return CatalogItem(i, title or f"title {i}", f"text {i}", {"genre": ["drama"]})


def test_replicas_starting_together_migrate_the_schema_once(database):
    pools, errors = [], []

    def start():
        try:
            pools.append(database())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(pools) == 4
    with pools[0].connection() as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [v for (v,) in rows] == [v for v, _, _ in MIGRATIONS]
    assert migrate(pools[1]) == []


def test_two_replicas_share_events_at_once_and_catalogue_and_popularity_after_a_sync(database):
    a = PostgresStore(database(), sync_interval_s=3600)  # syncs only when the test says
    b = PostgresStore(database(), sync_interval_s=3600)
    try:
        a.upsert_items([item("x"), item("y"), item("z")])
        assert set(a.catalog) == {"x", "y", "z"} and b.catalog == {}
        assert b.sync() >= 3 and set(b.catalog) == {"x", "y", "z"} and b.catalog["y"].attributes == {"genre": ["drama"]}
        version = b.catalog_version
        # Feedback through one replica is read by the other at once (no sync: events are read per request).
        a.record_events([Event("u1", "x", CLICK, 0.0, 1000, "home", "r1"), Event("u1", "y", DISMISS, 0.0, 1001)])
        assert b.feedback("u1") == [("x", CLICK, 0.0), ("y", DISMISS, 0.0)]
        assert [e.request_id for e in b.history("u1")] == ["r1", ""]
        assert b.clicks_for(["r1", "nope"]) == {("r1", "x")}
        # Popularity counts users with interest, across replicas, once per user.
        b.record_events([Event("u2", "x", RATING, 5.0, 1002), Event("u2", "x", CLICK, 0.0, 1003),
                         Event("u3", "x", RATING, 1.0, 1004)])
        a.sync()
        b.sync()
        assert dict(a.popularity) == dict(b.popularity) == {"x": 2}
        # Deletion through one reaches the other; so does erasure of a user's events and counts.
        assert a.delete_items(["z", "missing"]) == 1 and a.delete_items(["z"]) == 0
        b.sync()
        assert set(b.catalog) == {"x", "y"} and b.catalog_version > version
        assert b.delete_user("u1") == 2
        a.sync()
        assert dict(a.popularity) == {"x": 1} and a.feedback("u1") == []
        assert a.event_count() == b.event_count() == 3
        a.set_meta("k", "v1")
        b.set_meta("k", "v2")
        assert a.get_meta("k") == "v2" and a.get_meta("none") is None
    finally:
        a.close()
        b.close()


def test_an_older_write_never_overwrites_a_newer_one(database):
    a = PostgresStore(database(), sync_interval_s=3600)
    b = PostgresStore(database(), sync_interval_s=3600)
    try:
        a.upsert_items([item("x", "first")])
        b.upsert_items([item("x", "second")])
        a.sync()
        assert a.catalog["x"].title == "second"
        # Replaying the older version (the sync and a replica's own write race) changes nothing.
        a._mirror.apply_items([(item("x", "first"), 1)])
        assert a.catalog["x"].title == "second"
        a.upsert_items([item("x", "third")])  # re-adding after the other's write wins again
        b.sync()
        assert b.catalog["x"].title == "third"
    finally:
        a.close()
        b.close()


def test_the_background_sync_brings_another_replicas_change(database):
    a = PostgresStore(database(), sync_interval_s=3600)
    b = PostgresStore(database(), sync_interval_s=0.05)
    try:
        a.upsert_items([item("new")])
        deadline = threading.Event()
        for _ in range(100):
            if "new" in b.catalog:
                break
            deadline.wait(0.05)
        assert "new" in b.catalog
    finally:
        a.close()
        b.close()


def test_sessions_and_impressions_are_shared_by_replicas(database):
    pool_a, pool_b = database(), database()
    sessions_a = SessionStore(PostgresDb(pool_a, "sessions"), ttl_s=60, max_turns=2)
    sessions_b = SessionStore(PostgresDb(pool_b, "sessions"), ttl_s=60, max_turns=2)
    for n in (1, 2, 3):
        (sessions_a if n % 2 else sessions_b).save_turn(
            "u", "s", StoredTurn(n, f"r{n}", ParsedTurn(f"turn {n}"), (f"i{n}",), n))
    sessions_b.record_feedback("u", "s", [("i1", True), ("i2", False)])
    session = sessions_a.load("u", "s")
    assert [t.number for t in session.turns] == [2, 3] and session.next_turn == 4  # trimmed to the newest two
    assert session.feedback == (("i1", True), ("i2", False))
    sessions_a.save_turn("u", "s", StoredTurn(3, "r3", ParsedTurn("again"), ("i3",), 3))  # a retry replaces
    assert [t.parsed.text for t in sessions_b.load("u", "s").turns] == ["turn 2", "again"]
    assert sessions_b.delete_user("u") == 1 and sessions_a.load("u", "s").turns == ()

    log_a = ImpressionLog(PostgresDb(pool_a, "impressions"), flush_interval_s=0.01)
    log_b = ImpressionLog(PostgresDb(pool_b, "impressions"), flush_interval_s=0.01)
    try:
        for log, n in ((log_a, 0), (log_b, 1)):
            log.record([Impression(f"r{n}", "u", f"i{n}", 0, 1.0, "greedy", 0.0, 0, 10, 10, "m", "", 1000 + n)])
        log_a.flush()
        log_b.flush()
        assert [i.item_id for i in log_a.for_user("u")] == ["i0", "i1"]
        assert sum(len(batch) for batch in log_b.all(batch=1)) == 2
        assert log_b.delete_user("u") == 2 and log_a.for_user("u") == []
    finally:
        log_a.close()
        log_b.close()


def test_a_lost_database_is_unavailable_and_the_store_recovers(postgres, database):
    store = PostgresStore(database(), sync_interval_s=3600)
    try:
        store.record_events([Event("u", "x", CLICK, 0.0, 1)])
        postgres.stop("immediate")
        try:
            with pytest.raises(DependencyUnavailable, match="record events"):
                store.record_events([Event("u", "y", CLICK, 0.0, 2)])
            with pytest.raises(DependencyUnavailable, match="read feedback"):
                store.feedback("u")
        finally:
            postgres.start()
        assert store.feedback("u") == [("x", CLICK, 0.0)]  # nothing acknowledged was lost, nothing else was kept
        store.record_events([Event("u", "y", CLICK, 0.0, 2)])
        assert [i for i, _, _ in store.feedback("u")] == ["x", "y"]
    finally:
        store.close()
