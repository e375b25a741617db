"""What a session asks for, merged over its turns, and what that means for retrieval.

A constraint keeps items whose attribute holds a value (or, on the catalogue's time axis, a year in a
range), or with `negated` excludes them. Turns are merged oldest first and the newest turn wins a
conflict: a value said again (as wanted or unwanted) replaces what older turns said of it, a range on the
time axis replaces older ranges, and a wanted value of a key items hold only one of (a brand) replaces
older wanted values of that key. Wanted values of a multi-valued key (genres) accumulate: "action", then
"thriller" asks for both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

from gateway.conversation.vocabulary import AttributeVocabulary, as_year
from lmrec.filters import AttributeFilter


@dataclass(frozen=True)
class Constraint:
    """Items whose `key` holds one of `values`, or (time axis) a year in [low, high], either end open
    when None; `negated` excludes those items instead. `phrase`: the words that said it; `turn`: which."""

    key: str
    values: tuple[str, ...] = ()
    low: int | None = None
    high: int | None = None
    negated: bool = False
    phrase: str = ""
    turn: int = 0

    @property
    def is_range(self) -> bool:
        return self.low is not None or self.high is not None

    def holds(self, attributes: Mapping[str, Sequence[str]]) -> bool:
        """Whether the item holds the value (or a year in the range), before negation."""
        if self.is_range:
            return any(_within(as_year(v), self.low, self.high) for v in attributes.get(self.key, ()))
        return AttributeFilter(self.key, self.values).holds(attributes)

    def met_by(self, attributes: Mapping[str, Sequence[str]]) -> bool:
        return self.holds(attributes) != self.negated

    def describe(self) -> str:
        """Short words for people: "genre Comedy", "year 1980..1989", "not genre Horror"."""
        if self.is_range:
            what = f"{self.key} {'' if self.low is None else self.low}..{'' if self.high is None else self.high}"
        else:
            what = f"{self.key} {' or '.join(self.values)}"
        return f"not {what}" if self.negated else what

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping) -> Constraint:
        return cls(**{**raw, "values": tuple(raw.get("values", ()))})


@dataclass(frozen=True)
class ItemReference:
    """A shown item the user pointed at: `positive` ("more like the second one") makes it context,
    negative ("less like that") a negative item."""

    item_id: str
    positive: bool
    phrase: str = ""
    turn: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping) -> ItemReference:
        return cls(**raw)


def _within(year: int | None, low: int | None, high: int | None) -> bool:
    return year is not None and (low is None or year >= low) and (high is None or year <= high)


def merge_constraints(per_turn: Iterable[Sequence[Constraint]], single_valued: frozenset[str]) -> list[Constraint]:
    """The active constraints of a session, given each turn's constraints oldest turn first."""
    active: list[Constraint] = []
    for said in per_turn:
        for new in said:
            active = [kept for old in active if (kept := _after(old, new, single_valued)) is not None]
        active.extend(said)
    return active


def _after(old: Constraint, new: Constraint, single_valued: frozenset[str]) -> Constraint | None:
    """What is left of an older constraint once a newer one on the same key is said."""
    if old.key != new.key:
        return old
    if old.is_range or new.is_range:
        return None if old.is_range and new.is_range else old
    if not new.negated and not old.negated and new.key in single_valued:
        return None
    left = tuple(v for v in old.values if v not in set(new.values))
    if not left:
        return None
    return old if left == old.values else replace(old, values=left)


def meets_all(attributes: Mapping[str, Sequence[str]], active: Sequence[Constraint]) -> bool:
    return all(c.met_by(attributes) for c in active)


@dataclass
class Applied:
    """Active constraints as retrieval understands them: `filters` (key, values) AND-ed, each an OR of
    values; `excluded` items (negations); `unmet`: constraints no item of the catalogue can satisfy, left
    out (the answer says so) rather than emptying the answer."""

    filters: list[tuple[str, list[str]]] = field(default_factory=list)
    excluded: set[str] = field(default_factory=set)
    unmet: list[Constraint] = field(default_factory=list)
    applied: list[Constraint] = field(default_factory=list)


def apply_constraints(active: Sequence[Constraint], vocabulary: AttributeVocabulary) -> Applied:
    out = Applied()
    for c in active:
        if c.is_range:
            values = vocabulary.year_values(c.low, c.high) if c.key == vocabulary.year_key else []
        else:
            values = [v for v in c.values if v in vocabulary.counts.get(c.key, {})]
        if not values:
            if not c.negated:
                out.unmet.append(c)
            continue
        out.applied.append(c)
        if c.negated:
            out.excluded |= vocabulary.holders(c.key, values)
        else:
            out.filters.append((c.key, values))
    return out
