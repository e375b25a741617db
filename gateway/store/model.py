"""What every state store holds and answers with, whichever engine keeps it."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    user_id: str
    item_id: str
    event_type: int
    value: float
    timestamp_ms: int
    scenario: str = ""
    request_id: str = ""


def now_ms() -> int:
    return int(time.time() * 1000)
