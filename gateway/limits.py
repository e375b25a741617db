"""The public port's largest message, derived from the request limits the servicer enforces: a message
any valid request fits in, and nothing much bigger (a 64 MiB default would let one caller make the
gateway buffer 64 MiB per call before validation could refuse it)."""

from __future__ import annotations

from gateway import servicer as s
from lmrec import validation as v

FIELD = 6  # a field's tag and length prefix, at most
UTF8 = 4  # bytes per character, at most


def _string(max_bytes: int) -> int:
    return FIELD + max_bytes


def _ids(count: int) -> int:
    return count * _string(v.MAX_ID_BYTES)


def upsert_items_bytes() -> int:
    attributes = s.MAX_ATTRIBUTES * (3 * FIELD + v.MAX_ID_BYTES) + _ids(s.MAX_ATTRIBUTE_VALUES)
    item = (FIELD + _string(v.MAX_ID_BYTES) + _string(s.MAX_TITLE_CHARS * UTF8)
            + _string(v.MAX_ITEM_TEXT_CHARS * UTF8) + attributes)
    return s.MAX_ITEM_BATCH * item


def record_feedback_bytes() -> int:
    event = (FIELD + 3 * _string(v.MAX_ID_BYTES) + _string(64 * UTF8) + _string(s.MAX_SESSION_ID_BYTES)
             + 4 * 11)  # event type, value, time, their tags
    return s.MAX_EVENT_BATCH * event


def recommend_bytes() -> int:
    filters = v.MAX_FILTERS * (2 * FIELD + v.MAX_ID_BYTES + _ids(v.MAX_FILTER_VALUES))
    return (_string(v.MAX_ID_BYTES) + _string(v.MAX_QUERY_CHARS * UTF8) + _ids(s.MAX_RECENT_ITEMS) + _ids(v.MAX_BATCH)
            + filters + 2 * _string(s.MAX_SESSION_ID_BYTES) + 256)


def largest_request_bytes() -> int:
    """The bound for the public port, with 1 MiB to spare for fields too small to count."""
    return max(upsert_items_bytes(), record_feedback_bytes(), recommend_bytes(), _ids(s.MAX_ID_BATCH)) + (1 << 20)
