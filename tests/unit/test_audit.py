"""The audit log: one record per catalogue write and erasure, by the calling token's name, as a JSON line
on `lmrec.audit` at INFO and a durable row; an erasure is recorded by the exclusion list's hash, and
neither the record, the log line nor the audit file holds the erased user's id."""

from __future__ import annotations

import json
import logging

from gateway.audit import AuditLog
from gateway.impressions import Impression, ImpressionLog
from gateway.policy.feedback import CLICK
from gateway.servicer import GatewayServicer
from gateway.settings import GatewaySettings
from gateway.store import Event, GatewayStore
from lmrec import auth
from lmrec.erasure import user_hash

MARKER = "erase-me-7f3a9c"


class Clock:
    now = 1_700_000_000.123

    def __call__(self) -> float:
        return self.now


def test_records_carry_who_when_what_and_how_many_and_survive_reopening(tmp_path, caplog):
    audit = AuditLog(tmp_path / "audit.sqlite", clock=Clock())
    caplog.set_level(logging.INFO, logger="lmrec.audit")
    token = auth._principal.set("catalogue-bot")  # what AuthInterceptor sets for the call's token
    try:
        audit.record("UpsertItems", 3)
    finally:
        auth._principal.reset(token)
    audit.record("DeleteItems", 1)
    audit.close()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lmrec.audit"]
    assert lines == [
        {"time": "2023-11-14T22:13:20.123+00:00", "principal": "catalogue-bot", "action": "UpsertItems", "count": 3},
        {"time": "2023-11-14T22:13:20.123+00:00", "principal": "anonymous", "action": "DeleteItems", "count": 1}]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "lmrec.audit")
    reopened = AuditLog(tmp_path / "audit.sqlite")
    stored = reopened.records()
    assert [(r.principal, r.action, r.count, r.time_ms) for r in stored] == [
        ("catalogue-bot", "UpsertItems", 3, 1_700_000_000_123), ("anonymous", "DeleteItems", 1, 1_700_000_000_123)]
    assert reopened.records(after_seq=1)[0].action == "DeleteItems"
    reopened.close()


def test_an_erasure_is_audited_by_hash_with_its_counts_and_never_by_id(tmp_path, caplog):
    store = GatewayStore(tmp_path / "gateway.sqlite")
    impressions = ImpressionLog(tmp_path / "impressions.sqlite")
    audit = AuditLog(tmp_path / "audit.sqlite")
    store.record_events([Event(MARKER, "a", CLICK, 0.0, 1), Event(MARKER, "b", CLICK, 0.0, 2),
                         Event("other", "a", CLICK, 0.0, 3)])
    impressions.record([Impression("r1", MARKER, "a", 0, 1.0, "greedy", 0.0, 0, 10, 10, "v1", "", 1)])
    servicer = GatewayServicer(GatewaySettings(), store, None, None, None, impressions, None, audit)
    caplog.set_level(logging.INFO, logger="lmrec.audit")
    token = auth._principal.set("privacy-officer")
    try:
        reply = servicer._delete_user_data(MARKER)
    finally:
        auth._principal.reset(token)
    assert (reply.deleted_event_count, reply.deleted_impression_count) == (2, 1)
    [record] = audit.records()
    assert (record.principal, record.action, record.count, record.user_hash) == (
        "privacy-officer", "DeleteUserData", 3, user_hash(MARKER))
    assert record.detail == {"events": 2, "impressions": 1, "sessions": 0}
    [line] = [r.getMessage() for r in caplog.records if r.name == "lmrec.audit"]
    assert json.loads(line)["user_hash"] == user_hash(MARKER) and MARKER not in line
    for closing in (store, impressions, audit):
        closing.close()
    assert not any(MARKER.encode() in p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
