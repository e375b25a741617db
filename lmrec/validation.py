"""Request validation shared by the servicers; every failure names the offending field."""

from __future__ import annotations

import math
from collections.abc import Sequence

from lmrec.errors import InvalidArgument

MAX_ID_BYTES = 256
MAX_QUERY_CHARS = 2_000
MAX_ITEM_TEXT_CHARS = 10_000
MAX_BATCH = 10_000
MAX_ID_LIST = 20_000
# Attribute filters a Recommend may carry; what the gateway sends retrieval adds the scenario's and the
# conversation's, so retrieval takes twice as many.
MAX_FILTERS = 16
MAX_SEARCH_FILTERS = 2 * MAX_FILTERS
MAX_FILTER_VALUES = 1_000  # values one filter may list (lmrec/filters.py)


def require_id(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value.encode("utf-8")) > MAX_ID_BYTES:
        raise InvalidArgument(field, f"longer than {MAX_ID_BYTES} bytes")
    return value


def check_ids(values: Sequence[str], field: str, max_count: int = MAX_ID_LIST) -> list[str]:
    if len(values) > max_count:
        raise InvalidArgument(field, f"{len(values)} ids, at most {max_count} allowed")
    for i, value in enumerate(values):
        require_id(value, f"{field}[{i}]")
    return list(values)


def check_range(value: int, field: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidArgument(field, f"must be in {low}..{high}, got {value}")
    return value


def check_text(value: str, field: str, max_chars: int) -> str:
    if len(value) > max_chars:
        raise InvalidArgument(field, f"{len(value)} characters, at most {max_chars} allowed")
    return value


def check_batch(count: int, field: str, max_count: int = MAX_BATCH) -> None:
    if count == 0:
        raise InvalidArgument(field, "must not be empty")
    if count > max_count:
        raise InvalidArgument(field, f"{count} entries, at most {max_count} allowed")


def check_vector(values: Sequence[float], field: str, dimension: int) -> None:
    if len(values) != dimension:
        raise InvalidArgument(field, f"has {len(values)} dimensions, the index has {dimension}")
    if not all(math.isfinite(v) for v in values):
        raise InvalidArgument(field, "contains NaN or infinity")
