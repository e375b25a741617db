"""Suggested refinements ("chips") for a broad answer.

An answer is broad when, over its best candidates, some attribute's values are spread out: the entropy of
that key's value distribution, normalised by its maximum (log of the number of values present), is at
least BROAD_ENTROPY. The chips are then the values that split those candidates most evenly (the largest
binary entropy of "holds it or not"), across keys, 3 to 5 of them; on the time axis, decades. A value the
session already constrains is never suggested, and a chip's text reads back, as the next turn, into the
value it stands for.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.conversation.constraints import Constraint
from gateway.conversation.periods import decade_text
from gateway.conversation.vocabulary import MAX_VALUES_PER_KEY, AttributeVocabulary, as_year, phrase_of

TOP_CANDIDATES = 50
BROAD_ENTROPY = 0.75
# A chip's value must be held by this share of the candidates or more, and by this share less than all.
MIN_SHARE = 0.05
MIN_CHIPS, MAX_CHIPS = 3, 5


@dataclass(frozen=True)
class Chip:
    text: str
    key: str
    value: str
    share: float  # of the candidates holding it


def _decade(value: str) -> int | None:
    year = as_year(value)
    return None if year is None else year - year % 10


def _normalised_entropy(counts: Counter[str]) -> float:
    total = sum(counts.values())
    if len(counts) < 2 or total == 0:
        return 0.0
    h = -sum(c / total * math.log(c / total) for c in counts.values() if c)
    return h / math.log(len(counts))


def _split_entropy(share: float) -> float:
    return -sum(p * math.log(p) for p in (share, 1 - share) if p > 0)


def suggest_refinements(candidates: Sequence[Mapping[str, Sequence[str]]], vocabulary: AttributeVocabulary,
                        active: Sequence[Constraint] = ()) -> list[Chip]:
    """Chips for the ranked candidates' attributes (best first), or none when the answer is focused.

    Args:
        candidates: attributes of the ranked candidates, best first (the first TOP_CANDIDATES are read).
        vocabulary: the catalogue's vocabulary (which keys and values can be read back from a turn).
        active: the session's constraints (and the request's filters as constraints): never suggested.
    """
    top = list(candidates[:TOP_CANDIDATES])
    if len(top) < 2:
        return []
    said = {(c.key, v) for c in active for v in c.values}
    broad = False
    options: list[Chip] = []
    for key, values in vocabulary.counts.items():
        if len(values) > MAX_VALUES_PER_KEY:
            continue
        if key == vocabulary.year_key:
            counts = Counter(d for a in top for d in {_decade(v) for v in a.get(key, ())} if d is not None)
            labelled = {f"{d}..{d + 9}": (decade_text(d), n) for d, n in counts.items()}
        else:
            counts = Counter(v for a in top for v in set(a.get(key, ())) if (key, v) not in said)
            labelled = {v: (v, n) for v, n in counts.items() if vocabulary.phrases.get(phrase_of(v)) == (key, v)}
        if len(counts) >= MIN_CHIPS and _normalised_entropy(Counter({str(k): n for k, n in counts.items()})
                                                            ) >= BROAD_ENTROPY:
            broad = True
        for value, (text, n) in labelled.items():
            share = n / len(top)
            if MIN_SHARE <= share <= 1 - MIN_SHARE:
                options.append(Chip(text, key, value, share))
    if not broad:
        return []
    options.sort(key=lambda c: (-_split_entropy(c.share), c.key, c.value))
    chosen = options[:MAX_CHIPS]
    return chosen if len(chosen) >= MIN_CHIPS else []
