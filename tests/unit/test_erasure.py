"""Erasure: an erased user's events, impressions and sessions leave no byte of their id in the SQLite
files (tables, indexes, WAL); the erased user is listed by hash only; an impression the writer holds
when the erasure starts is erased too; the exclusion list drops the user's interactions from a dataset."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from gateway.conversation.critique import ParsedTurn
from gateway.conversation.sessions import SessionStore, StoredTurn
from gateway.impressions import _SCHEMA as IMPRESSIONS_SCHEMA
from gateway.impressions import Impression, ImpressionLog
from gateway.policy.feedback import CLICK, RATING
from gateway.store import Event, GatewayStore
from gateway.store.db import SqliteDb
from lmrec_data.datasets import CatalogItem, Dataset, Interaction
from lmrec.erasure import HASH_PREFIX, append_erased, load_erased, parse_erased, user_hash
from lmrec_data.exclusion import exclude_users

MARKER = "erase-me-7f3a9c"


def files_holding(directory: Path, marker: str) -> dict[str, int]:
    """{file: occurrences} of `marker`'s bytes in every file under `directory`."""
    needle = marker.encode()
    return {str(p.relative_to(directory)): n for p in sorted(directory.rglob("*"))
            if p.is_file() and (n := p.read_bytes().count(needle))}


def impression(user: str, item: str, request: str = "r") -> Impression:
    return Impression(request, user, item, 0, 1.0, "greedy", 0.0, 0, 10, 10, "v1", "", 1)


def test_an_erased_users_rows_leave_no_byte_of_their_id_in_any_file(tmp_path):
    store = GatewayStore(tmp_path / "gateway.sqlite")
    impressions = ImpressionLog(tmp_path / "impressions.sqlite")
    sessions = SessionStore(tmp_path / "sessions.sqlite", ttl_s=3600, max_turns=20)
    # The user's rows share pages with other users' rows, which stay; one write per call, as in service.
    for n in range(200):
        store.record_events([Event(f"user-{n}", f"item-{n % 40}", CLICK, 0.0, n)])
        if n == 100:
            store.record_events([Event(MARKER, f"item-{k}", RATING, 4.0, 1000 + k) for k in range(5)])
        impressions.record([impression(MARKER if n % 50 == 0 else f"user-{n}", f"item-{n % 40}", f"r{n}")])
    sessions.save_turn(MARKER, "s1", StoredTurn(1, "r1", ParsedTurn("a film like item-3", query_text="a film"),
                                                ("item-3", "item-4"), 1))
    sessions.record_feedback(MARKER, "s1", [("item-3", True)])
    sessions.save_turn("user-7", "s1", StoredTurn(1, "r2", ParsedTurn("comedy"), ("item-5",), 2))
    impressions.flush()
    assert files_holding(tmp_path, MARKER)  # the scan finds what is there

    assert impressions.delete_user(MARKER) == 4
    assert sessions.delete_user(MARKER) == 1
    assert store.delete_user(MARKER) == 5
    assert files_holding(tmp_path, MARKER) == {}
    assert load_erased(tmp_path / "erased-users.txt") == {user_hash(MARKER)}
    # Everyone else's data stays.
    assert len(store.history("user-7")) == 1 and len(impressions.for_user("user-7")) == 1
    assert sessions.load("user-7", "s1").next_turn == 2 and store.event_count() == 200
    for closing in (store, impressions, sessions):
        closing.close()
    assert files_holding(tmp_path, MARKER) == {}


class HeldDb(SqliteDb):
    """Holds the first write transaction until released: the impression writer with a batch in hand."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, IMPRESSIONS_SCHEMA)
        self.entered, self.release = threading.Event(), threading.Event()

    def transaction(self):
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(10)
        return super().transaction()


def test_an_impression_the_writer_holds_when_the_erasure_starts_is_erased_too(tmp_path):
    db = HeldDb(tmp_path / "impressions.sqlite")
    log = ImpressionLog(db)
    log.record([impression(MARKER, "a")])
    assert db.entered.wait(5)  # the writer took the batch and is about to write it
    result = []
    eraser = threading.Thread(target=lambda: result.append(log.delete_user(MARKER)))
    eraser.start()
    time.sleep(0.2)
    assert eraser.is_alive()  # waits for the batch in hand
    db.release.set()
    eraser.join(10)
    assert result == [1] and log.for_user(MARKER) == []
    log.close()


def test_the_list_holds_hashes_with_a_header_and_refuses_other_lines(tmp_path):
    path = tmp_path / "state" / "erased-users.txt"
    append_erased(path, [user_hash("u1")])
    append_erased(path, [user_hash("u2"), user_hash("u1")])
    text = path.read_text()
    assert text.startswith("#") and text.count("\n") == 4 and "u1" not in text.replace(HASH_PREFIX, "")
    assert load_erased(path) == {user_hash("u1"), user_hash("u2")}
    assert path.stat().st_mode & 0o777 == 0o600
    assert user_hash("u1") != user_hash("u2") and len(user_hash("")) == 64
    with pytest.raises(ValueError, match="x.txt line 2"):
        parse_erased(f"{user_hash('u1')}\nu3\n", "x.txt")


def test_excluding_users_drops_their_interactions_and_attributes_only():
    items = [CatalogItem("a", "A", "A"), CatalogItem("b", "B", "B")]
    data = Dataset("tiny", items, [Interaction("u1", "a", 1), Interaction("u2", "a", 2), Interaction("u2", "b", 3),
                                   Interaction("u3", "b", 4)], {"u2": {"age": ["25-34"]}, "u3": {}})
    kept, exclusion = exclude_users(data, {user_hash("u2"), user_hash("not in the data")})
    assert [(x.user_id, x.item_id) for x in kept.interactions] == [("u1", "a"), ("u3", "b")]
    assert set(kept.users) == {"u3"} and kept.items == items
    assert exclusion.as_dict() == {"listed_users": 2, "excluded_users": 1, "excluded_interactions": 2}
    unchanged, none = exclude_users(data, set())
    assert unchanged.fingerprint() == data.fingerprint() and none.users == 0
