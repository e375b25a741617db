"""The PostgreSQL schema, as numbered migrations applied in order at start (gateway/store/postgres_db.py).

Append, never edit: a database that has applied migration N never sees N again. Every replica runs the
pending ones under one advisory lock, so many gateways starting at once migrate exactly once.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "catalogue, events, popularity, meta", """
        -- One sequence orders every change other replicas must read (items, popularity); writers take
        -- CHANGE_LOCK before drawing from it, so versions become visible in the order they were drawn.
        CREATE SEQUENCE change_version;
        CREATE TABLE items (
            item_id TEXT PRIMARY KEY, title TEXT NOT NULL, text TEXT NOT NULL, attributes JSONB NOT NULL,
            deleted BOOLEAN NOT NULL DEFAULT FALSE, version BIGINT NOT NULL);
        CREATE INDEX items_by_version ON items (version);
        CREATE TABLE events (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, user_id TEXT NOT NULL, item_id TEXT NOT NULL,
            event_type INTEGER NOT NULL, value DOUBLE PRECISION NOT NULL, ts_ms BIGINT NOT NULL,
            scenario TEXT NOT NULL, request_id TEXT NOT NULL DEFAULT '');
        CREATE INDEX events_feedback_by_user ON events (user_id, ts_ms, seq) INCLUDE (item_id, event_type, value);
        CREATE INDEX events_by_request ON events (request_id) WHERE request_id <> '';
        -- (user, item) pairs with a positive event: popularity counts users, so a second click adds nothing.
        CREATE TABLE positive_pairs (user_id TEXT NOT NULL, item_id TEXT NOT NULL, PRIMARY KEY (user_id, item_id));
        CREATE TABLE popularity (item_id TEXT PRIMARY KEY, users BIGINT NOT NULL, version BIGINT NOT NULL);
        CREATE INDEX popularity_by_version ON popularity (version);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """),
    (2, "impressions", """
        CREATE TABLE impressions (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, request_id TEXT NOT NULL, user_id TEXT NOT NULL,
            item_id TEXT NOT NULL, position INTEGER NOT NULL, propensity DOUBLE PRECISION NOT NULL,
            policy TEXT NOT NULL, policy_param DOUBLE PRECISION NOT NULL, greedy_rank INTEGER NOT NULL,
            slate_size INTEGER NOT NULL, pool_size INTEGER NOT NULL, model_version TEXT NOT NULL,
            scenario TEXT NOT NULL, time_ms BIGINT NOT NULL);
        CREATE INDEX impressions_by_user ON impressions (user_id, time_ms, seq);
    """),
    (3, "conversation sessions", """
        CREATE TABLE sessions (
            user_id TEXT NOT NULL, session_id TEXT NOT NULL, created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL,
            next_turn INTEGER NOT NULL, PRIMARY KEY (user_id, session_id));
        CREATE INDEX sessions_by_age ON sessions (updated_ms);
        CREATE TABLE turns (
            user_id TEXT NOT NULL, session_id TEXT NOT NULL, turn INTEGER NOT NULL, request_id TEXT NOT NULL,
            parsed TEXT NOT NULL, shown TEXT NOT NULL, time_ms BIGINT NOT NULL,
            PRIMARY KEY (user_id, session_id, turn));
        CREATE TABLE session_feedback (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
            item_id TEXT NOT NULL, positive INTEGER NOT NULL, time_ms BIGINT NOT NULL);
        CREATE INDEX session_feedback_by_session ON session_feedback (user_id, session_id, seq);
    """),
    (4, "erasure list, audit log, no sampled user data in planner statistics", """
        -- Erased users by hash (lmrec/erasure.py), for `lmrec train --exclude-users`; `compacted`: the user
        -- tables were rewritten since, so no deleted tuple of theirs is left in a data file
        -- (gateway/store/compaction.py).
        CREATE TABLE erased_users (
            user_hash TEXT PRIMARY KEY, erased_at TIMESTAMPTZ NOT NULL, compacted BOOLEAN NOT NULL DEFAULT FALSE);
        CREATE INDEX erased_users_pending ON erased_users (erased_at) WHERE NOT compacted;
        -- Catalogue writes and erasures (gateway/audit.py): who, when, how many; never the erased data.
        CREATE TABLE audit (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, time_ms BIGINT NOT NULL, principal TEXT NOT NULL,
            action TEXT NOT NULL, count BIGINT NOT NULL, user_hash TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT '{}');
        -- ANALYZE would copy sampled values (most common values, histogram bounds) of these columns into
        -- pg_statistic, where an erasure never reaches them; lookups by these keys still use their indexes.
        -- TYPE TEXT (the type they have) drops what an earlier ANALYZE sampled, rewriting nothing.
        ALTER TABLE events ALTER COLUMN user_id TYPE TEXT, ALTER COLUMN user_id SET STATISTICS 0,
            ALTER COLUMN request_id TYPE TEXT, ALTER COLUMN request_id SET STATISTICS 0;
        ALTER TABLE positive_pairs ALTER COLUMN user_id TYPE TEXT, ALTER COLUMN user_id SET STATISTICS 0;
        ALTER TABLE impressions ALTER COLUMN user_id TYPE TEXT, ALTER COLUMN user_id SET STATISTICS 0,
            ALTER COLUMN request_id TYPE TEXT, ALTER COLUMN request_id SET STATISTICS 0;
        ALTER TABLE sessions ALTER COLUMN user_id TYPE TEXT, ALTER COLUMN user_id SET STATISTICS 0,
            ALTER COLUMN session_id TYPE TEXT, ALTER COLUMN session_id SET STATISTICS 0;
        ALTER TABLE turns ALTER COLUMN user_id TYPE TEXT, ALTER COLUMN user_id SET STATISTICS 0,
            ALTER COLUMN session_id TYPE TEXT, ALTER COLUMN session_id SET STATISTICS 0,
            ALTER COLUMN request_id TYPE TEXT, ALTER COLUMN request_id SET STATISTICS 0,
            ALTER COLUMN parsed TYPE TEXT, ALTER COLUMN parsed SET STATISTICS 0;
        ALTER TABLE session_feedback ALTER COLUMN user_id TYPE TEXT, ALTER COLUMN user_id SET STATISTICS 0,
            ALTER COLUMN session_id TYPE TEXT, ALTER COLUMN session_id SET STATISTICS 0;
    """),
]
