"""The session store: durable across reopening, per user, expiring after its time to live, trimmed from
the oldest turn, feedback kept, erasable by user."""

from __future__ import annotations

from gateway.conversation.critique import ParsedTurn
from gateway.conversation.sessions import MAX_FEEDBACK, SessionStore, StoredTurn


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def turn(n: int, text: str = "") -> StoredTurn:
    return StoredTurn(n, f"r{n}", ParsedTurn(text or f"turn {n}", query_text=text), (f"i{n}a", f"i{n}b"), n)


def test_turns_and_feedback_survive_reopening_and_belong_to_one_user(tmp_path):
    clock = Clock()
    store = SessionStore(tmp_path / "s.sqlite", ttl_s=60, max_turns=10, clock=clock)
    assert store.load("u", "s").next_turn == 1
    store.save_turn("u", "s", turn(1, "an action movie"))
    store.save_turn("u", "s", turn(2))
    store.record_feedback("u", "s", [("i1a", True), ("i2b", False)])
    store.close()
    reopened = SessionStore(tmp_path / "s.sqlite", ttl_s=60, max_turns=10, clock=clock)
    session = reopened.load("u", "s")
    assert [t.number for t in session.turns] == [1, 2] and session.next_turn == 3
    assert session.turns[0].parsed.query_text == "an action movie" and session.turns[1].shown == ("i2a", "i2b")
    assert session.feedback == (("i1a", True), ("i2b", False))
    assert reopened.load("someone else", "s").turns == ()
    # A retried turn replaces itself.
    reopened.save_turn("u", "s", turn(2, "again"))
    assert [t.parsed.text for t in reopened.load("u", "s").turns] == ["an action movie", "again"]


def test_a_session_expires_after_its_time_to_live_and_starts_fresh(tmp_path):
    clock = Clock()
    store = SessionStore(tmp_path / "s.sqlite", ttl_s=60, max_turns=10, clock=clock)
    store.save_turn("u", "s", turn(1))
    clock.now += 59
    assert store.load("u", "s").next_turn == 2
    store.record_feedback("u", "s", [("x", True)])  # feedback keeps it alive too
    clock.now += 59
    assert store.load("u", "s").next_turn == 2
    clock.now += 61
    fresh = store.load("u", "s")
    assert fresh.turns == () and fresh.feedback == () and fresh.next_turn == 1
    assert store.session_count() == 0  # the expired one was erased, not just hidden
    store.save_turn("u", "a", turn(1))
    store.save_turn("v", "b", turn(1))
    clock.now += 120
    assert store.purge_expired() == 2 and store.session_count() == 0


def test_an_overlong_session_is_trimmed_from_the_oldest_turn(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite", ttl_s=60, max_turns=3, clock=Clock())
    for n in range(1, 7):
        store.save_turn("u", "s", turn(n))
    session = store.load("u", "s")
    assert [t.number for t in session.turns] == [4, 5, 6] and session.next_turn == 7
    store.record_feedback("u", "s", [(f"i{n}", True) for n in range(MAX_FEEDBACK + 5)])
    feedback = store.load("u", "s").feedback
    assert len(feedback) == MAX_FEEDBACK and feedback[-1][0] == f"i{MAX_FEEDBACK + 4}"


def test_deleting_a_user_erases_every_session_of_theirs_only(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite", ttl_s=60, max_turns=3, clock=Clock())
    store.save_turn("u", "a", turn(1))
    store.save_turn("u", "b", turn(1))
    store.record_feedback("u", "c", [("x", False)])
    store.save_turn("v", "a", turn(1))
    assert store.delete_user("u") == 3
    assert store.load("u", "a").turns == () and store.load("u", "c").feedback == ()
    assert store.load("v", "a").next_turn == 2
    rows = sum(store._db.execute(f"SELECT COUNT(*) FROM {t} WHERE user_id = 'u'").fetchone()[0]
               for t in ("sessions", "turns", "session_feedback"))
    assert rows == 0
