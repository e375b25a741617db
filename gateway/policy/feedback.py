"""What each feedback event means: interest (with a weight), or a negative signal.

DISMISS, and a RATING below the threshold, say "not this": such an item never joins the user's positive
context or the item's popularity, is never recommended again, and pushes similar items down (the ranking
tier applies that penalty). Every other event is interest, weighted by its type.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from lmrec.v1 import gateway_service_pb2 as gw

# Event types (gateway_service.proto EventType) as stored in the events table.
VIEW, CLICK, RATING, PURCHASE, DISMISS = (gw.EVENT_TYPE_VIEW, gw.EVENT_TYPE_CLICK, gw.EVENT_TYPE_RATING,
                                          gw.EVENT_TYPE_PURCHASE, gw.EVENT_TYPE_DISMISS)


class EventWeights(BaseModel):
    """Strength of interest each positive event type signals in the user's context (times recency), and
    strength of each kind of negative (times the ranking tier's negative_penalty, whose default was chosen
    on ML-100K so that reading ratings <= 2 as negatives does not lower NDCG@10: docs/evaluation.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    view: float = Field(0.5, ge=0)
    click: float = Field(1.0, ge=0)
    rating: float = Field(1.0, ge=0)
    purchase: float = Field(2.0, ge=0)
    dismiss: float = Field(1.0, ge=0)
    low_rating: float = Field(1.0, ge=0)

    def of(self, event_type: int) -> float:
        return {VIEW: self.view, CLICK: self.click, RATING: self.rating, PURCHASE: self.purchase}.get(event_type, 0.0)

    def of_negative(self, event_type: int) -> float:
        return self.dismiss if event_type == DISMISS else self.low_rating


def is_negative(event_type: int, value: float, negative_rating_below: float) -> bool:
    return event_type == DISMISS or (event_type == RATING and value < negative_rating_below)


def negative_sql(negative_rating_below: float) -> tuple[str, tuple]:
    """The same rule as `is_negative`, as an SQL condition over the events table and its parameters."""
    return f"(event_type = {DISMISS} OR (event_type = {RATING} AND value < ?))", (negative_rating_below,)


@dataclass(frozen=True)
class Feedback:
    """A user's events read for one request. `positive` (oldest first, one entry per item at its latest
    event) with its `weights`; `negative` items (oldest first) with `negative_weights`; `seen`: every
    item with any event."""

    positive: list[str]
    weights: list[float]
    negative: list[str]
    negative_weights: list[float]
    seen: set[str]


def read_feedback(events: Iterable[tuple[str, int, float]], recent_item_ids: Iterable[str], weights: EventWeights,
                  negative_rating_below: float) -> Feedback:
    """Folds (item_id, event_type, value) events, oldest first, plus the client's recent items (read as views).

    An item's latest event decides whether it is interest or a negative; its weight is the strongest
    positive event it had, so a purchase is not diluted by a later view of the same item.
    """
    latest: dict[str, bool] = {}  # item -> negative?, in order of latest event
    strength: dict[str, float] = {}
    against: dict[str, float] = {}
    for item_id, event_type, value in [*events, *((i, VIEW, 0.0) for i in recent_item_ids)]:
        negative = is_negative(event_type, value, negative_rating_below)
        latest.pop(item_id, None)
        latest[item_id] = negative
        if negative:
            against[item_id] = weights.of_negative(event_type)
        else:
            strength[item_id] = max(strength.get(item_id, 0.0), weights.of(event_type))
    positive = [i for i, neg in latest.items() if not neg]
    negative = [i for i, neg in latest.items() if neg]
    return Feedback(positive, [strength[i] for i in positive], negative, [against[i] for i in negative],
                    set(latest))
