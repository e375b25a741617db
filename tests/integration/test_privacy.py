"""Privacy against real systems (gateway, ranking, retrieval as processes):

* after DeleteUserData no file under the system's state directory holds the erased user's id or what
  they typed: SQLite tables, indexes, WAL and shared-memory files, the retrieval and ranking tiers'
  files, the exclusion list (a hash), the audit log (a hash), the services' logs;
* with PostgreSQL, none of the database's data files holds them once the user tables were rewritten
  (gateway/store/compaction.py), and the erased user is listed by hash for `lmrec train`;
* user ids, query texts and item texts reach the services' logs neither at INFO nor at DEBUG;
* migration 4 keeps sampled user ids out of PostgreSQL's planner statistics, rewriting nothing;
* a rewrite that did not happen (a role that does not own the tables) leaves the erasure pending.
Measurements and what remains: docs/privacy.md.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from lmrec.erasure import load_erased, user_hash
from lmrec.v1 import common_pb2, gateway_service_pb2 as gw

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

USER = "erase-me-7f3a9c"
QUERY = "querytext-b19c4e"
ITEM_TEXT = "itemtext-5d2e81"
N_ITEMS = 60


def scan(root: Path, *markers: str) -> tuple[dict[str, dict[str, int]], int, int]:
    """({marker: {file: occurrences}} over every file under `root`, files scanned, bytes scanned)."""
    found: dict[str, dict[str, int]] = {m: {} for m in markers}
    files = size = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        files, size = files + 1, size + len(data)
        for m in markers:
            if n := data.count(m.encode()):
                found[m][str(path.relative_to(root))] = n
    return found, files, size


def exercise(stub, catalogue: list[str]) -> int:
    """Gives the gateway everything it keeps about USER: events (one in a session), impressions from
    plain and conversational Recommend calls with QUERY in the text, a session of two turns; and a new
    item whose text holds ITEM_TEXT. Returns the items shown to USER."""
    stub.UpsertItems(gw.UpsertItemsRequest(items=[common_pb2.Item(
        item_id="privacy-item", title="A quiet film", text=f"A quiet film about {ITEM_TEXT} and the sea")]),
        timeout=60)
    stub.RecordFeedback(gw.RecordFeedbackRequest(events=[
        gw.FeedbackEvent(user_id=USER, item_id=catalogue[0], event_type=gw.EVENT_TYPE_CLICK),
        gw.FeedbackEvent(user_id=USER, item_id=catalogue[1], event_type=gw.EVENT_TYPE_RATING, value=4.0),
        gw.FeedbackEvent(user_id=USER, item_id="privacy-item", event_type=gw.EVENT_TYPE_CLICK),
        gw.FeedbackEvent(user_id=USER, item_id=catalogue[2], event_type=gw.EVENT_TYPE_CLICK, session_id="chat-1")]),
        timeout=30)
    stub.RecordFeedback(gw.RecordFeedbackRequest(events=[
        gw.FeedbackEvent(user_id=f"bystander-{n}", item_id=catalogue[n], event_type=gw.EVENT_TYPE_CLICK)
        for n in range(10)]), timeout=30)
    shown = 0
    for query in (f"films about {QUERY}", ""):
        shown += len(stub.Recommend(gw.RecommendRequest(user_id=USER, k=5, query=query), timeout=30).items)
    for text in (f"something like {QUERY}", "older ones"):
        shown += len(stub.Recommend(gw.RecommendRequest(user_id=USER, k=5, session_id="chat-1", query=text),
                                    timeout=30).items)
    stub.Recommend(gw.RecommendRequest(user_id="bystander-1", k=5, query="comedy"), timeout=30)
    history = stub.GetUserHistory(gw.GetUserHistoryRequest(user_id=USER), timeout=30)
    assert len(history.events) == 4 and len(history.impressions) == shown > 10
    return shown


def expected_principal() -> str:
    """The token name the suite's clients call with (tests/conftest.py), or anonymous without auth."""
    tokens = os.environ.get("LMREC_GATEWAY_AUTH_TOKENS", "").strip()
    return tokens.split()[0] if tokens else "anonymous"


def logs_of(system) -> dict[str, str]:
    return {p.name: p.read_text(errors="replace") for p in (system.layout.state_dir / "run").glob("*.log")}


def test_erasure_leaves_no_trace_under_the_state_directory_and_info_logs_hold_nothing_personal(
        small_system_factory, ml100k, monkeypatch):
    monkeypatch.setenv("LMREC_LOG_LEVEL", "INFO")
    system = small_system_factory(n_items=N_ITEMS, histories=False)
    root, gateway_dir = system.layout.state_dir, system.layout.state_dir / "gateway"
    shown = exercise(system.stub, [i.item_id for i in ml100k.items[:N_ITEMS]])
    before, _, _ = scan(root, USER, QUERY)
    # What the scan must find before the erasure (a scan that finds nothing proves nothing).
    assert {"gateway/gateway.sqlite-wal", "gateway/impressions.sqlite-wal", "gateway/sessions.sqlite-wal"} <= set(
        before[USER]), before
    assert before[QUERY], before

    reply = system.stub.DeleteUserData(gw.DeleteUserDataRequest(user_id=USER), timeout=30)
    assert (reply.deleted_event_count, reply.deleted_impression_count, reply.deleted_session_count) == (4, shown, 1)

    found, files, size = scan(root, USER, QUERY)
    print(f"\nafter erasure: {files} files, {size:,} bytes scanned under {root}; "
          f"{sum(len(f) for f in before.values())} files held a marker before")
    assert found == {USER: {}, QUERY: {}}
    assert not system.stub.GetUserHistory(gw.GetUserHistoryRequest(user_id=USER), timeout=30).impressions
    # Listed for training by hash; audited by hash, by the caller's token name.
    assert load_erased(gateway_dir / "erased-users.txt") == {user_hash(USER)}
    with sqlite3.connect(f"file:{gateway_dir / 'audit.sqlite'}?mode=ro", uri=True) as audit:
        rows = audit.execute("SELECT principal, action, count, user_hash, detail FROM audit ORDER BY seq").fetchall()
    assert rows[-1][:4] == (expected_principal(), "DeleteUserData", 4 + shown + 1, user_hash(USER))
    assert ("UpsertItems", 1) in {(action, count) for _, action, count, _, _ in rows}
    assert sum(count for _, action, count, _, _ in rows if action == "UpsertItems") == N_ITEMS + 1
    assert '"user_hash": "' + user_hash(USER) in logs_of(system)["gateway.log"]  # the lmrec.audit line

    for name, text in logs_of(system).items():
        for marker in (USER, QUERY, ITEM_TEXT):
            assert marker not in text, f"{marker} in {name} at INFO"


def test_debug_logs_hold_no_user_id_query_or_item_text_either(small_system_factory, ml100k, monkeypatch):
    monkeypatch.setenv("LMREC_LOG_LEVEL", "DEBUG")
    system = small_system_factory(n_items=N_ITEMS, histories=False)
    exercise(system.stub, [i.item_id for i in ml100k.items[:N_ITEMS]])
    system.stub.DeleteUserData(gw.DeleteUserDataRequest(user_id=USER), timeout=30)
    logs = logs_of(system)
    assert any(" DEBUG " in text for text in logs.values())  # DEBUG was on
    for name, text in logs.items():
        for marker in (USER, QUERY, ITEM_TEXT):
            assert marker not in text, f"{marker} in {name} at DEBUG"


def test_with_postgresql_no_data_file_of_the_database_holds_the_erased_user(small_system_factory, ml100k, postgres):
    import psycopg

    url = postgres.create_database()
    system = small_system_factory(n_items=N_ITEMS, histories=False, extra_args={"gateway": ["--database-url", url]})
    shown = exercise(system.stub, [i.item_id for i in ml100k.items[:N_ITEMS]])
    with psycopg.connect(url, autocommit=True) as conn:
        oid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
        conn.execute("CHECKPOINT")
        files = postgres.data_dir / "base" / str(oid)
        before, _, _ = scan(files, USER, QUERY)
        assert before[USER] and before[QUERY], before

        reply = system.stub.DeleteUserData(gw.DeleteUserDataRequest(user_id=USER), timeout=30)
        assert (reply.deleted_event_count, reply.deleted_impression_count,
                reply.deleted_session_count) == (4, shown, 1)
        started = time.monotonic()
        while not conn.execute("SELECT bool_and(compacted) FROM erased_users").fetchone()[0]:
            assert time.monotonic() - started < 60, "the user tables were not rewritten within 60 s"
            time.sleep(0.2)
        rewritten_s = time.monotonic() - started
        conn.execute("CHECKPOINT")
        found, n_files, size = scan(files, USER, QUERY)
        wal, _, wal_size = scan(postgres.data_dir / "pg_wal", USER)
        print(f"\nPostgreSQL: rewritten {rewritten_s:.1f} s after the erasure; {n_files} files, {size:,} bytes "
              f"scanned in {files}; pg_wal ({wal_size:,} bytes) still holds the id in {wal[USER]}")
        assert found == {USER: {}, QUERY: {}}
        assert conn.execute("SELECT count(*) FROM audit WHERE action = 'DeleteUserData' AND user_hash = %s",
                            (user_hash(USER),)).fetchone()[0] == 1
    assert load_erased(url) == {user_hash(USER)}
    local, _, _ = scan(system.layout.state_dir, USER, QUERY)  # the gateway's own directory: tokens, logs
    assert local == {USER: {}, QUERY: {}}


def test_migration_4_drops_sampled_user_ids_from_planner_statistics_without_a_rewrite(postgres, monkeypatch):
    import psycopg
    from psycopg_pool import ConnectionPool

    from gateway.store import migrations, postgres_db

    url = postgres.create_database()
    pool = ConnectionPool(url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=True)
    try:
        monkeypatch.setattr(postgres_db, "MIGRATIONS", migrations.MIGRATIONS[:3])  # a database from before
        postgres_db.migrate(pool)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO events (user_id, item_id, event_type, value, ts_ms, scenario) "
                         "SELECT 'user-' || (g % 50), 'item-' || (g % 300), 2, 0, g, '' FROM generate_series(1, 5000) g")
            conn.execute("ANALYZE events")

            def sampled() -> set[str]:
                return {a for (a,) in conn.execute("SELECT attname FROM pg_stats WHERE tablename = 'events'")}

            def files() -> list[int]:
                return [f for (f,) in conn.execute("SELECT relfilenode FROM pg_class WHERE relname IN "
                                                   "('events', 'events_feedback_by_user') ORDER BY relname")]

            assert "user_id" in sampled()
            before = files()
            monkeypatch.setattr(postgres_db, "MIGRATIONS", migrations.MIGRATIONS)
            assert 4 in postgres_db.migrate(pool)
            conn.execute("ANALYZE events")
            assert "user_id" not in sampled() and "request_id" not in sampled() and "item_id" in sampled()
            assert files() == before  # nothing rewritten
            plan = " ".join(r for (r,) in conn.execute(
                "EXPLAIN SELECT item_id FROM events WHERE user_id = 'user-7' ORDER BY ts_ms, seq"))
            assert "events_feedback_by_user" in plan, plan
    finally:
        pool.close()


def test_a_rewrite_by_a_role_that_does_not_own_the_tables_is_not_taken_for_done(postgres):
    """VACUUM FULL by a role that does not own a table only warns: the erasure must stay pending."""
    import psycopg
    from psycopg_pool import ConnectionPool

    from gateway.store.compaction import NotRewritten, TableCompactor
    from gateway.store.postgres_db import open_pool

    url = postgres.create_database()
    open_pool(url, 1).close()  # migrated by the owner
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS lmrec_writer")
        conn.execute("CREATE ROLE lmrec_writer LOGIN")
        conn.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO lmrec_writer")
        conn.execute("INSERT INTO erased_users (user_hash, erased_at) VALUES (%s, now())", (user_hash(USER),))
    pool = ConnectionPool(url.replace("lmrec@", "lmrec_writer@", 1), min_size=1, max_size=2,
                          kwargs={"autocommit": True}, open=True)
    compactor = TableCompactor(pool, delay_s=3600)
    try:
        with pytest.raises(NotRewritten, match="must own them"):
            compactor.compact()
        with pool.connection() as conn:
            assert conn.execute("SELECT compacted FROM erased_users").fetchone()[0] is False
    finally:
        compactor.close()
        pool.close()
