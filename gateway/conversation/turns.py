"""One Recommend turn of a session, planned: what the session's turns and feedback mean for this request.

  * constraints of every kept turn, merged (newest wins, gateway/conversation/constraints.py), become
    filters and exclusions, and the answer is checked against them;
  * items pointed at ("more like the second one") and accepted in the session join the user's context,
    newest weighing most; items pointed away from ("less like that") and rejected become negatives, the
    ranking tier's negative path (gateway/policy/feedback.py feeds it the user's own);
  * the turns' texts, newest first, form the free-text request, a turn's words weighing by how often they
    appear (a mean-pooled text encoder reads a repeated text as a heavier one): the newest twice, the two
    before it once, older ones not at all (their constraints still hold).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.conversation.constraints import Applied, Constraint, apply_constraints, merge_constraints
from gateway.conversation.critique import ParsedTurn, ShownContext, parse_turn
from gateway.conversation.periods import years_of
from gateway.conversation.sessions import Session, SessionStore, StoredTurn
from gateway.conversation.vocabulary import AttributeVocabulary, VocabularyCache
from lmrec.catalog import CatalogItem
from lmrec.validation import MAX_QUERY_CHARS

# A pointed-at item weighs like a purchase in the context (gateway/policy/feedback.py EventWeights).
SESSION_ITEM_WEIGHT = 2.0
# Weight of a turn's text and pointed-at items per turn of age.
TURN_DECAY = 0.5
QUERY_MIN_WEIGHT = 0.2
NEWEST_REPEATS = 2
# Retrieval takes at most 32 filters per search; the request may bring 16 of its own.
MAX_SESSION_FILTERS = 16
# Negations beyond this many excluded items are enforced on the candidates only (retrieval's id lists
# are bounded); the answer is still checked against every constraint.
MAX_SESSION_EXCLUSIONS = 10_000
# A shown title can be referred to ("more like star wars") for this many turns, among each turn's first
# TITLE_ITEMS items: the titles are matched against every turn's words.
TITLE_TURNS, TITLE_ITEMS = 3, 20


@dataclass
class TurnPlan:
    """What a turn asks of the pipeline.

    Attributes:
        number: the turn's number in its session (1: a new session).
        parsed: the turn as read.
        applied: the session's active constraints as filters and exclusions (`applied.applied`: those
            in force; the answer meets all of them).
        context_items / negative_items: (item, weight), oldest first, added to the user's context.
        excluded: items never to show this turn (negations, pointed-at items).
        pointed: item -> the turn that pointed at it (-1: accepted by feedback), for reasons.
        query: the weighted free text for the language model; `query_label` the newest turn's words.
        notes: what this turn could not read, said in every item's reasons.
    """

    number: int
    parsed: ParsedTurn
    applied: Applied
    context_items: list[tuple[str, float]] = field(default_factory=list)
    negative_items: list[tuple[str, float]] = field(default_factory=list)
    excluded: set[str] = field(default_factory=set)
    pointed: dict[str, int] = field(default_factory=dict)
    query: str = ""
    query_label: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def active(self) -> list[Constraint]:
        return self.applied.applied

    def filters(self) -> list[tuple[str, list[str]]]:
        return self.applied.filters[-MAX_SESSION_FILTERS:]

    def meets(self, attributes: Mapping[str, Sequence[str]]) -> bool:
        return all(c.met_by(attributes) for c in self.applied.applied)

    def matches(self, attributes: Mapping[str, Sequence[str]]) -> tuple[tuple[int, str], ...]:
        """(turn, words) of each wanted constraint the item meets, newest turn first."""
        return tuple((c.turn, c.phrase) for c in sorted(self.applied.applied, key=lambda c: -c.turn)
                     if not c.negated and c.holds(attributes))


def weighted_query(texts: Sequence[str]) -> str:
    """The turns' texts (oldest first; empty for a turn without free text) as one free-text request, newest
    first, each repeated by its weight, which halves per turn of age."""
    parts: list[str] = []
    for age, text in enumerate(reversed(texts)):
        weight = TURN_DECAY ** age
        if weight < QUERY_MIN_WEIGHT:
            break
        if text:
            parts += [text] * max(1, round(weight * NEWEST_REPEATS))
    return ". ".join(parts)[:MAX_QUERY_CHARS]


def plan_turn(session: Session, text: str, request_id: str, vocabulary: AttributeVocabulary,
              catalog: Mapping[str, CatalogItem]) -> TurnPlan:
    """Reads a turn against its session. Pure: the session, text and catalogue decide everything.

    A request repeating the last turn's request_id is a retry of it: it is planned (and later stored)
    as that turn again, not as a new one.
    """
    turns = list(session.turns)
    number = session.next_turn
    if turns and request_id and turns[-1].request_id == request_id:
        number = turns.pop().number
    last = turns[-1].shown if turns else ()
    pointed_last = [r.item_id for t in turns for r in t.parsed.references]
    shown = ShownContext(
        last=tuple(last),
        titles={i: catalog[i].title for t in turns[-TITLE_TURNS:] for i in t.shown[:TITLE_ITEMS] if i in catalog},
        last_years=tuple(years_of([catalog[i].attributes for i in last if i in catalog], vocabulary.year_key))
        if vocabulary.year_key else (),
        last_reference=pointed_last[-1] if pointed_last else "")
    parsed = parse_turn(text, vocabulary, shown, number)
    said = [*(t.parsed for t in turns), parsed]
    applied = apply_constraints(merge_constraints([p.constraints for p in said], vocabulary.single_valued),
                                vocabulary)
    plan = TurnPlan(number, parsed, applied, query=weighted_query([p.query_text for p in said]),
                    query_label=next((p.query_text for p in reversed(said) if p.query_text), ""))
    if len(applied.excluded) > MAX_SESSION_EXCLUSIONS:
        plan.excluded |= set(sorted(applied.excluded)[:MAX_SESSION_EXCLUSIONS])
    else:
        plan.excluded |= applied.excluded
    _point(plan, said, session.feedback, number)
    plan.notes = list(parsed.notes) + [
        f"“{c.phrase}”: no item of the catalogue has {c.describe()}; not applied"
        for c in applied.unmet if c.turn == number]
    return plan


def _point(plan: TurnPlan, said: Sequence[ParsedTurn], feedback: Sequence[tuple[str, bool]], number: int) -> None:
    """Context and negative items from references (oldest first, a newer one replacing an older one on the
    same item) and the session's feedback (as recent as the newest turn)."""
    polarity: dict[str, tuple[bool, int]] = {}
    for parsed in said:
        for ref in parsed.references:
            polarity.pop(ref.item_id, None)
            polarity[ref.item_id] = (ref.positive, ref.turn)
    for item_id, positive in feedback:
        polarity.pop(item_id, None)
        polarity[item_id] = (positive, -1)
    for item_id, (positive, turn) in polarity.items():
        age = number - turn if turn > 0 else 0
        weight = TURN_DECAY ** age
        plan.excluded.add(item_id)
        if positive:
            plan.context_items.append((item_id, SESSION_ITEM_WEIGHT * weight))
            plan.pointed[item_id] = turn
        else:
            plan.negative_items.append((item_id, weight))


class Conversation:
    """Sessions kept for the pipeline: plans a turn from the stored session, stores it once answered."""

    def __init__(self, sessions: SessionStore, vocabulary: VocabularyCache,
                 catalog: Callable[[], Mapping[str, CatalogItem]]) -> None:
        """`catalog`: returns the current catalogue (the store swaps in a new mapping on every change)."""
        self.sessions = sessions
        self.vocabulary = vocabulary
        self.catalog = catalog

    def begin(self, user_id: str, session_id: str, text: str, request_id: str) -> TurnPlan:
        session = self.sessions.load(user_id, session_id)
        return plan_turn(session, text, request_id, self.vocabulary.get(), self.catalog())

    def end(self, user_id: str, session_id: str, plan: TurnPlan, request_id: str, shown: Sequence[str]) -> None:
        self.sessions.save_turn(user_id, session_id, StoredTurn(plan.number, request_id, plan.parsed, tuple(shown),
                                                                int(time.time() * 1000)))

    def record_feedback(self, user_id: str, session_id: str, items: Sequence[tuple[str, bool]]) -> None:
        self.sessions.record_feedback(user_id, session_id, items)

    def delete_user(self, user_id: str) -> int:
        return self.sessions.delete_user(user_id)
