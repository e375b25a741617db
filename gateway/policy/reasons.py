"""Reasons: at least one short, true sentence per recommended item, strongest first.

The ranking tier attributes each candidate's score (leave-one-out over the user's history items, and the
free-text request's part); the gateway adds what only it knows: which filters matched, which places were
reserved for new items or drawn by exploration, fallback answers (popularity, retrieval order), and in a
conversation which turn's constraint the item meets or which pointed-at item it is like.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lmrec.filters import AttributeFilter
from lmrec.v1 import gateway_service_pb2 as gw

QUERY_TEXT_CHARS = 60


@dataclass(frozen=True)
class ItemEvidence:
    """What is known about why one item is in the answer."""

    history_item_id: str = ""
    history_weight: float = 0.0
    query_weight: float = 0.0
    matched_filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    new_item_slot: bool = False
    explored: bool = False
    propensity: float = 1.0
    # Conversation: (turn, the words said) of each session constraint the item meets, newest first.
    turn_matches: tuple[tuple[int, str], ...] = ()
    # The turn that pointed at `history_item_id` ("more like the second one"); 0 when it did not, -1 when
    # the item was accepted by feedback in the session rather than named in a turn.
    pointed_turn: int = 0
    # What this turn's text could not be read as ("names no attribute of this catalogue...").
    turn_notes: tuple[str, ...] = ()


def _quoted(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= QUERY_TEXT_CHARS else text[: QUERY_TEXT_CHARS - 1] + "…"


def reasons_for(evidence: ItemEvidence, source: str, query: str, titles: dict[str, str]) -> list[gw.Reason]:
    """The reasons of one item. `source` is the answer's ("ranked", "retrieval", "popularity"); `titles`
    maps item ids to titles for the sentences."""
    out: list[gw.Reason] = []
    if evidence.explored:
        out.append(gw.Reason(kind=gw.REASON_KIND_EXPLORATION, weight=evidence.propensity,
                             text="Something different, to learn what else you like"))
    if evidence.new_item_slot:
        out.append(gw.Reason(kind=gw.REASON_KIND_NEW_ITEM, text="New in the catalogue"))
    ranked = []
    if evidence.history_item_id and evidence.history_weight > 0:
        title = titles.get(evidence.history_item_id) or evidence.history_item_id
        if evidence.pointed_turn:
            said = (f"as you asked in turn {evidence.pointed_turn}" if evidence.pointed_turn > 0
                    else "which you chose in this conversation")
            ranked.append(gw.Reason(kind=gw.REASON_KIND_SESSION_TURN, item_id=evidence.history_item_id,
                                    weight=evidence.history_weight, text=f"Like {title}, {said}"))
        else:
            ranked.append(gw.Reason(kind=gw.REASON_KIND_HISTORY_ITEM, item_id=evidence.history_item_id,
                                    weight=evidence.history_weight, text=f"Because you liked {title}"))
    if query and (evidence.query_weight > 0 or source != "ranked"):
        ranked.append(gw.Reason(kind=gw.REASON_KIND_QUERY, weight=max(evidence.query_weight, 0.0),
                                text=f"Matches your request “{_quoted(query)}”"))
    ranked.sort(key=lambda r: -r.weight)
    out.extend(ranked)
    for turn, phrase in evidence.turn_matches:
        out.append(gw.Reason(kind=gw.REASON_KIND_SESSION_TURN, text=f"Matches “{_quoted(phrase)}” (turn {turn})"))
    for key, values in evidence.matched_filters:
        out.append(gw.Reason(kind=gw.REASON_KIND_ATTRIBUTE, text=f"{key}: {', '.join(values)}"))
    if source == "popularity":
        out.append(gw.Reason(kind=gw.REASON_KIND_POPULAR, text="Popular with other users"))
    elif not out:
        # No single history item raises its score (or ranking failed and retrieval's order was served):
        # it is there for the user's items as a whole.
        out.append(gw.Reason(kind=gw.REASON_KIND_HISTORY_ITEM, text="Similar to items you interacted with"))
    out.extend(gw.Reason(kind=gw.REASON_KIND_SESSION_TURN, text=note) for note in evidence.turn_notes)
    return out


def matched_filters(attributes: dict[str, list[str]], filters: Sequence[AttributeFilter]
                    ) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The values of each filter the item holds (filters are AND-ed, so a served item matches them all)."""
    return tuple((f.key, hit) for f in filters if (hit := f.held(attributes)))
