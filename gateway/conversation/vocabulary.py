"""The attribute vocabulary of the loaded catalogue: which words of a turn name which attribute value.

Built from the items' own attributes, keys and values as they are in the data (ML-100K's `genre` and
`year`, a product catalogue's `brand` or `category`), never from a list of known genres, so the same code
reads any catalogue. A key whose values are years (whole numbers 1000..2999) is the catalogue's time axis:
decades and year ranges are read against it.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

# Function words never read as an attribute value, whatever the catalogue holds.
STOPWORDS = frozenset("""a an the and or but not no nor of in on at to for from with without by as is it its
this that these those one ones some any more less most very so too than then just only like me my i you we
what which who please something anything thing things""".split())
# Keys with more distinct values than this (ids, free-text tags) are not matched by phrase.
MAX_VALUES_PER_KEY = 5000
MAX_PHRASE_TOKENS = 6
YEAR_RANGE = (1000, 2999)
# Share of a key's values that must read as years for the key to be the catalogue's time axis.
YEAR_SHARE = 0.95

_TOKEN = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Token:
    """One word of a text: normalised form and its character span in the original."""

    norm: str
    start: int
    end: int


def stem(word: str) -> str:
    """A crude plural fold ("comedies" ~ "comedy", "thrillers" ~ "thriller"), applied to both the data's
    values and the user's words, so it only has to be consistent, not correct English."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[Token]:
    """Lower-cased, possessive-folded ("Children's" ~ "children"), plural-folded words with their spans."""
    lowered = text.lower().replace("’", "'")
    out = []
    for match in _TOKEN.finditer(lowered):
        word = match.group(0)
        end = match.end()
        after_apostrophe = match.start() > 0 and lowered[match.start() - 1] == "'" and bool(out)
        # "children's": the "s" after an apostrophe is not a word of its own; "don't" says "not".
        if word == "s" and after_apostrophe:
            out[-1] = Token(out[-1].norm, out[-1].start, end)
            continue
        if word == "t" and after_apostrophe:
            out[-1] = Token("not", out[-1].start, end)
            continue
        out.append(Token(stem(word), match.start(), end))
    return out


def phrase_of(value: str) -> tuple[str, ...]:
    return tuple(t.norm for t in tokenize(value))


def as_year(value: str) -> int | None:
    try:
        year = int(value.strip())
    except ValueError:
        return None
    return year if YEAR_RANGE[0] <= year <= YEAR_RANGE[1] else None


@dataclass(frozen=True)
class AttributeVocabulary:
    """Attributes of one catalogue as phrases.

    Attributes:
        phrases: normalised word tuple -> (key, value); when two keys share a phrase, the commoner pair.
        counts: key -> value -> number of items holding it.
        items_with: (key, value) -> the items holding it (negations become exclusions through it).
        single_valued: keys no item holds two values of (a newer value replaces an older one).
        year_key: the key read as the time axis, or None.
        years: year -> that key's values for it, as they are in the data.
    """

    phrases: Mapping[tuple[str, ...], tuple[str, str]]
    counts: Mapping[str, Mapping[str, int]]
    items_with: Mapping[tuple[str, str], frozenset[str]]
    single_valued: frozenset[str]
    year_key: str | None
    years: Mapping[int, tuple[str, ...]]
    n_items: int
    max_phrase_tokens: int = MAX_PHRASE_TOKENS

    @classmethod
    def from_items(cls, items: Mapping[str, Mapping[str, Sequence[str]]]) -> AttributeVocabulary:
        """`items`: item id -> its attributes (key -> values)."""
        holders: dict[tuple[str, str], set[str]] = defaultdict(set)
        multi: set[str] = set()
        for item_id, attributes in items.items():
            for key, values in attributes.items():
                if len(set(values)) > 1:
                    multi.add(key)
                for value in values:
                    holders[(key, value)].add(item_id)
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        for (key, value), ids in holders.items():
            counts[key][value] = len(ids)
        year_key = _year_key(counts)
        years: dict[int, list[str]] = defaultdict(list)
        if year_key is not None:
            for value in counts[year_key]:
                year = as_year(value)
                if year is not None:
                    years[year].append(value)
        phrases: dict[tuple[str, ...], tuple[str, str]] = {}
        for key, values in counts.items():
            if key == year_key or len(values) > MAX_VALUES_PER_KEY:
                continue
            for value, count in values.items():
                phrase = phrase_of(value)
                if not phrase or len(phrase) > MAX_PHRASE_TOKENS or _not_a_name(phrase):
                    continue
                # "Sci-Fi" is also written "scifi": a multi-word value answers to its words run together.
                for variant in {phrase, ("".join(phrase),)}:
                    held = phrases.get(variant)
                    if held is None or counts[held[0]][held[1]] < count:
                        phrases[variant] = (key, value)
        return cls(phrases=phrases, counts={k: dict(v) for k, v in counts.items()},
                   items_with={pair: frozenset(ids) for pair, ids in holders.items()},
                   single_valued=frozenset(k for k in counts if k not in multi), year_key=year_key,
                   years={y: tuple(sorted(v)) for y, v in sorted(years.items())}, n_items=len(items),
                   max_phrase_tokens=max((len(p) for p in phrases), default=1))

    @property
    def year_span(self) -> tuple[int, int] | None:
        return (min(self.years), max(self.years)) if self.years else None

    def year_values(self, low: int | None, high: int | None) -> list[str]:
        """The time axis's values within [low, high] (either end open when None)."""
        return [v for year, values in self.years.items()
                if (low is None or year >= low) and (high is None or year <= high) for v in values]

    def holders(self, key: str, values: Sequence[str]) -> set[str]:
        out: set[str] = set()
        for value in values:
            out |= self.items_with.get((key, value), frozenset())
        return out


def _not_a_name(phrase: tuple[str, ...]) -> bool:
    """One-word values that are function words or single characters would match ordinary sentences."""
    return len(phrase) == 1 and (phrase[0] in STOPWORDS or len(phrase[0]) < 2)


def _year_key(counts: Mapping[str, Mapping[str, int]]) -> str | None:
    """The key whose values are years, held by the most items; None when no key is one."""
    best, best_items = None, 0
    for key, values in counts.items():
        if len(values) < 2:
            continue
        yearly = sum(as_year(v) is not None for v in values)
        if yearly / len(values) >= YEAR_SHARE:
            items = sum(values.values())
            if items > best_items:
                best, best_items = key, items
    return best


class VocabularyCache:
    """The vocabulary of the current catalogue, rebuilt when the catalogue changed, at most every
    `min_interval_s` (a catalogue being loaded changes with every batch; a few seconds stale is fine)."""

    def __init__(self, items: Callable[[], Mapping[str, Mapping[str, Sequence[str]]]], version: Callable[[], int],
                 min_interval_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._items = items
        self._version = version
        self._interval = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._built: tuple[int, float, AttributeVocabulary] | None = None

    @classmethod
    def for_store(cls, store) -> VocabularyCache:
        """The vocabulary of a GatewayStore's catalogue (`catalog`, bumped `catalog_version`)."""
        return cls(lambda: {i: item.attributes for i, item in store.catalog.items()}, lambda: store.catalog_version)

    def get(self) -> AttributeVocabulary:
        with self._lock:
            version, now = self._version(), self._clock()
            if self._built is None or (self._built[0] != version and now - self._built[1] >= self._interval):
                self._built = (version, now, AttributeVocabulary.from_items(self._items()))
            return self._built[2]


def value_counts(attributes: Sequence[Mapping[str, Sequence[str]]], key: str) -> Counter[str]:
    """How many of the given items hold each value of `key`."""
    return Counter(v for a in attributes for v in set(a.get(key, ())))
