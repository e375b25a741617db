"""The gateway's impression log as read for off-policy evaluation: validated rows into column arrays."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POLICIES = ("greedy", "epsilon", "softmax")
PROPENSITY_KINDS = ("marginal", "conditional")
_STR_FIELDS = ("request_id", "user_id", "item_id", "model_version", "scenario")
_INT_FIELDS = ("position", "greedy_rank", "slate_size", "pool_size", "time_ms")
LOG_FIELDS = (*_STR_FIELDS, *_INT_FIELDS, "propensity", "policy", "policy_param", "propensity_kind", "clicked")


@dataclass(frozen=True)
class ImpressionLog:
    """Column arrays of a logged impression file, one entry per shown item (see LOG_FIELDS)."""

    request_id: np.ndarray
    user_id: np.ndarray
    item_id: np.ndarray
    position: np.ndarray
    propensity: np.ndarray
    policy: np.ndarray
    policy_param: np.ndarray
    greedy_rank: np.ndarray
    slate_size: np.ndarray
    pool_size: np.ndarray
    propensity_kind: np.ndarray
    model_version: np.ndarray
    scenario: np.ndarray
    time_ms: np.ndarray
    clicked: np.ndarray

    def __len__(self) -> int:
        return len(self.request_id)


def _check_row(row: object) -> str | None:
    """Name and problem of the first invalid field of a parsed log row, or None when it is valid."""
    if not isinstance(row, dict):
        return "row: not a JSON object"
    for field in LOG_FIELDS:
        if field not in row:
            return f"{field}: missing"
    for field in _STR_FIELDS:
        if not isinstance(row[field], str) or not row[field]:
            return f"{field}: must be a non-empty string, got {row[field]!r}"
    for field in _INT_FIELDS:
        # bool is an int subclass; a true/false position is a writer bug, not slot 1.
        if not isinstance(row[field], int) or isinstance(row[field], bool) or row[field] < 0:
            return f"{field}: must be an integer >= 0, got {row[field]!r}"
    if row["slate_size"] < 1 or row["position"] >= row["slate_size"]:
        return f"position: must lie in [0, slate_size={row['slate_size']}), got {row['position']!r}"
    p = row["propensity"]
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 < p <= 1.0:
        return f"propensity: must be a number in (0, 1], got {p!r}"
    if row["policy"] not in POLICIES:
        return f"policy: must be one of {POLICIES}, got {row['policy']!r}"
    param = row["policy_param"]
    if not isinstance(param, (int, float)) or isinstance(param, bool) or not math.isfinite(param) or param < 0:
        return f"policy_param: must be a finite number >= 0, got {param!r}"
    if row["policy"] == "epsilon" and param > 1:
        return f"policy_param: epsilon must lie in [0, 1], got {param!r}"
    if row["propensity_kind"] not in PROPENSITY_KINDS:
        return f"propensity_kind: must be one of {PROPENSITY_KINDS}, got {row['propensity_kind']!r}"
    if row["clicked"] not in (True, False) or not isinstance(row["clicked"], (bool, int)):
        return f"clicked: must be a boolean or 0/1, got {row['clicked']!r}"
    return None


def columns_from_rows(rows: list[dict]) -> ImpressionLog:
    """Column arrays from already validated row dicts."""
    def column(field: str, dtype) -> np.ndarray:
        return np.array([row[field] for row in rows], dtype=dtype)

    return ImpressionLog(
        **{f: column(f, object) for f in (*_STR_FIELDS, "policy", "propensity_kind")},
        **{f: column(f, np.int64) for f in _INT_FIELDS},
        propensity=column("propensity", np.float64), policy_param=column("policy_param", np.float64),
        clicked=column("clicked", np.float64))


def read_log(path: str | Path) -> ImpressionLog:
    """Reads and validates a JSONL impression log (blank lines skipped, unknown keys ignored).

    Raises:
        ValueError: a line is not JSON or has a missing/invalid field (message names line and field), or
            the file holds no impressions.
        OSError: the file cannot be read.
    """
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {line_no}: not valid JSON ({exc.msg})") from exc
            problem = _check_row(row)
            if problem is not None:
                raise ValueError(f"{path}: line {line_no}: {problem}")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no impressions")
    return columns_from_rows(rows)
