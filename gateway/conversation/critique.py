"""One turn's text read into constraints and references to shown items.

  * attribute values of the catalogue named in the text ("comedy" -> genre Comedy; a brand on product
    data), matched word for word against the vocabulary built from the data (gateway/conversation/
    vocabulary.py); values joined by "or" are alternatives, others all apply;
  * time expressions on the catalogue's year-valued attribute ("from the 80s", "before 1980", "older");
  * negation: "not X", "no X", "without X", "anything but X", "less X" exclude what follows, up to the end
    of the clause (punctuation, "but", "though", ...);
  * references to the items shown by the previous turn: ordinals ("the second one", "2nd", "#2", "the
    last one"), "that one" / "like that" (the item pointed at last, else the top one), or a shown title;
    wanted unless negated ("less like that", "not the first one").

What names nothing of the catalogue is read as text only, and a note says so; a negated phrase that names
nothing is left out of the text (a text encoder would read "not violent" as "violent").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.conversation.constraints import Constraint, ItemReference
from gateway.conversation.periods import find_periods
from gateway.conversation.vocabulary import STOPWORDS, AttributeVocabulary, Token, tokenize

NEGATION_CUES = frozenset({"not", "no", "without", "except", "excluding", "nothing", "never", "avoid", "skip",
                           "hate", "dislike", "less", "fewer", "non", "unlike", "none"})
# "anything but X": after these words "but" negates instead of ending the clause.
BUT_NEGATES_AFTER = frozenset({"anything", "everything", "all"})
CLAUSE_WORDS = frozenset({"but", "though", "although", "however", "instead", "rather", "yet", "just", "only",
                          "also", "plus"})
ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
            "eighth": 8, "ninth": 9, "tenth": 10, "top": 1, "last": -1}
REFERENCE_NOUNS = frozenset({"one", "item", "film", "movie", "title", "product", "pick", "result", "option",
                             "choice", "suggestion"})
DEICTIC = frozenset({"that", "this", "those", "these"})
_NUMBERED = re.compile(r"^(\d{1,2})(?:st|nd|rd|th)$")
_PUNCTUATION = re.compile(r"[,.;:!?]")
_TITLE_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")


@dataclass(frozen=True)
class ShownContext:
    """What the session showed before this turn.

    Attributes:
        last: items shown by the previous turn, in order ("the second one").
        titles: every item shown in the session -> its title (references by title).
        last_years: years of the items in `last`, on the time axis ("older").
        last_reference: the item pointed at most recently ("that one"); empty when none.
    """

    last: tuple[str, ...] = ()
    titles: Mapping[str, str] = field(default_factory=dict)
    last_years: tuple[int, ...] = ()
    last_reference: str = ""


@dataclass(frozen=True)
class ParsedTurn:
    """A turn as read: its constraints and references, the text the language model gets (`query_text`:
    negated phrases and references cut out), and notes for the reasons."""

    text: str
    constraints: tuple[Constraint, ...] = ()
    references: tuple[ItemReference, ...] = ()
    query_text: str = ""
    notes: tuple[str, ...] = ()
    text_only: bool = False

    def to_dict(self) -> dict:
        return {"text": self.text, "constraints": [c.to_dict() for c in self.constraints],
                "references": [r.to_dict() for r in self.references], "query_text": self.query_text,
                "notes": list(self.notes), "text_only": self.text_only}

    @classmethod
    def from_dict(cls, raw: Mapping) -> ParsedTurn:
        return cls(raw["text"], tuple(Constraint.from_dict(c) for c in raw.get("constraints", ())),
                   tuple(ItemReference.from_dict(r) for r in raw.get("references", ())),
                   raw.get("query_text", ""), tuple(raw.get("notes", ())), bool(raw.get("text_only", False)))


@dataclass
class _Match:
    """A span of tokens [first, last] that says something: a value, a period or a reference."""

    first: int
    last: int
    kind: str  # "value", "period", "reference"
    key: str = ""
    value: str = ""
    low: int | None = None
    high: int | None = None
    item_id: str = ""


def parse_turn(text: str, vocabulary: AttributeVocabulary, shown: ShownContext, turn: int) -> ParsedTurn:
    """Reads one turn. Pure: the same text, vocabulary and shown items give the same result."""
    lowered = text.lower().replace("’", "'")
    source = text if len(lowered) == len(text) else lowered  # spans index into both only if lengths agree
    tokens = tokenize(text)
    if not tokens:
        return ParsedTurn(text)
    notes: list[str] = []
    matches: list[_Match] = []
    if vocabulary.year_key is not None:
        periods, period_notes = find_periods(lowered, list(vocabulary.years), shown.last_years)
        notes += period_notes
        for p in periods:
            span = _token_span(tokens, p.start, p.end)
            if span:
                matches.append(_Match(*span, "period", key=vocabulary.year_key, low=p.low, high=p.high))
    used = _used(matches, len(tokens))
    for m in _references(tokens, lowered, shown, used, notes):
        matches.append(m)
        used[m.first:m.last + 1] = [True] * (m.last - m.first + 1)
    matches += _values(tokens, vocabulary, used)
    matches.sort(key=lambda m: m.first)
    negated, scopes = _negation(tokens, lowered, matches)

    constraints = _constraints(matches, negated, tokens, source, vocabulary, turn)
    references = tuple(ItemReference(m.item_id, not negated[m.first], _phrase(source, tokens, m, negated), turn)
                       for m in matches if m.kind == "reference")
    cut = [(tokens[_lead_in(tokens, lowered, m.first)].start, tokens[m.last].end)
           for m in matches if m.kind == "reference"]
    for first, last in scopes:
        words = [t.norm for i, t in enumerate(tokens[first + 1:last + 1], first + 1)
                 if not any(m.first <= i <= m.last for m in matches)]
        inside = any(first < m.first <= last for m in matches)
        if not inside and any(w not in STOPWORDS for w in words):
            notes.append(f"“{source[tokens[first].start:tokens[last].end]}”: names no attribute of this "
                         "catalogue; left out of the text")
        cut.append((tokens[first].start, tokens[last].end))
    query_text = _without(source, tokens, cut)
    text_only = not constraints and not references
    if text_only and query_text:
        notes.append(f"“{query_text}”: names no attribute of this catalogue; read as text only")
    return ParsedTurn(text, tuple(constraints), references, query_text, tuple(notes), text_only)


def _lead_in(tokens: Sequence[Token], lowered: str, first: int) -> int:
    """The first word of "more like the" before a reference, so that cutting the reference leaves no stub."""
    while (first > 0 and tokens[first - 1].norm in STOPWORDS | {"similar"}
           and not _PUNCTUATION.search(lowered[tokens[first - 1].end:tokens[first].start])):
        first -= 1
    return first


def _token_span(tokens: Sequence[Token], start: int, end: int) -> tuple[int, int] | None:
    inside = [i for i, t in enumerate(tokens) if t.start >= start and t.end <= end]
    return (inside[0], inside[-1]) if inside else None


def _used(matches: Sequence[_Match], n: int) -> list[bool]:
    used = [False] * n
    for m in matches:
        used[m.first:m.last + 1] = [True] * (m.last - m.first + 1)
    return used


def _references(tokens: Sequence[Token], lowered: str, shown: ShownContext, used: list[bool],
                notes: list[str]) -> list[_Match]:
    """Ordinals, "that one", and titles of shown items, resolved to item ids."""
    out: list[_Match] = []
    norms = [t.norm for t in tokens]
    for first, last, item_id in _title_mentions(norms, shown, used):
        out.append(_Match(first, last, "reference", item_id=item_id))
        used[first:last + 1] = [True] * (last - first + 1)
    for i, word in enumerate(norms):
        if used[i]:
            continue
        following = norms[i + 1] if i + 1 < len(norms) else ""
        before = norms[i - 1] if i > 0 else ""
        span_end = i + 1 if following in REFERENCE_NOUNS else i
        position: int | None = None
        ends = _clause_ends_after(tokens, lowered, i)
        if word in ORDINALS and (following in REFERENCE_NOUNS or (before == "the" and ends)):
            position = ORDINALS[word]
        elif (numbered := _NUMBERED.match(word)) and (following in REFERENCE_NOUNS or before == "the"):
            position = int(numbered.group(1))
        elif word.isdigit() and (before in ("number", "item") or lowered[max(0, tokens[i].start - 1)] == "#"):
            position = int(word)
        elif word in DEICTIC and (following == "one" or before in ("like", "than")):
            span_end = i + 1 if following == "one" else i
            target = shown.last_reference or (shown.last[0] if shown.last else "")
            if not target:
                notes.append(f"“{lowered[tokens[i].start:tokens[span_end].end]}”: nothing was shown yet")
                continue
            out.append(_Match(i, span_end, "reference", item_id=target))
            continue
        else:
            continue
        phrase = lowered[tokens[i].start:tokens[span_end].end]
        if not shown.last:
            notes.append(f"“{phrase}”: nothing was shown yet")
        elif position == 0 or abs(position) > len(shown.last):
            notes.append(f"“{phrase}”: only {len(shown.last)} items were shown")
        else:
            out.append(_Match(i, span_end, "reference", item_id=shown.last[position - 1 if position > 0 else -1]))
    return out


def _clause_ends_after(tokens: Sequence[Token], lowered: str, i: int) -> bool:
    if i + 1 >= len(tokens):
        return True
    following = tokens[i + 1]
    return (_PUNCTUATION.search(lowered[tokens[i].end:following.start]) is not None
            or following.norm in CLAUSE_WORDS or following.norm in ("and", "or", "please"))


def _title_mentions(norms: Sequence[str], shown: ShownContext, used: Sequence[bool]) -> list[tuple[int, int, str]]:
    """Shown items whose title (without its year and articles) appears word for word; longest first."""
    found = []
    for item_id, title in shown.titles.items():
        words = [t.norm for t in tokenize(_TITLE_YEAR.sub("", title))]
        while words and words[0] in ("the", "a", "an"):
            words = words[1:]
        while words and words[-1] in ("the", "a", "an"):
            words = words[:-1]
        if not words or all(w in STOPWORDS for w in words) or len("".join(words)) < 4:
            continue
        n = len(words)
        for i in range(len(norms) - n + 1):
            if list(norms[i:i + n]) == words and not any(used[i:i + n]):
                found.append((i, i + n - 1, item_id))
    found.sort(key=lambda f: -(f[1] - f[0]))
    taken: list[tuple[int, int, str]] = []
    for f in found:
        if all(f[1] < t[0] or f[0] > t[1] for t in taken):
            taken.append(f)
    return taken


def _values(tokens: Sequence[Token], vocabulary: AttributeVocabulary, used: list[bool]) -> list[_Match]:
    """Attribute values named in the unused words, longest phrase first from each position."""
    out = []
    norms = [t.norm for t in tokens]
    i = 0
    while i < len(norms):
        for length in range(min(vocabulary.max_phrase_tokens, len(norms) - i), 0, -1):
            if any(used[i:i + length]):
                continue
            pair = vocabulary.phrases.get(tuple(norms[i:i + length]))
            if pair is not None:
                out.append(_Match(i, i + length - 1, "value", key=pair[0], value=pair[1]))
                i += length
                break
        else:
            i += 1
    return out


def _negation(tokens: Sequence[Token], lowered: str, matches: Sequence[_Match]
              ) -> tuple[list[bool], list[tuple[int, int]]]:
    """Per token, whether it is inside a negation's scope; and each scope as (cue, last token)."""
    starts = {m.first for m in matches}
    negated = [False] * len(tokens)
    scopes: list[tuple[int, int]] = []
    cue: int | None = None
    for i, token in enumerate(tokens):
        gap = lowered[tokens[i - 1].end:token.start] if i else ""
        before = tokens[i - 1].norm if i else ""
        opens = token.norm in NEGATION_CUES or (token.norm == "but" and before in BUT_NEGATES_AFTER)
        closes = (_PUNCTUATION.search(gap) is not None or (token.norm in CLAUSE_WORDS and not opens)
                  or (token.norm == "and" and i + 1 not in starts))
        if cue is not None and (closes or opens):
            scopes.append((cue, i - 1))
            cue = None
        if opens:
            cue = i
        elif cue is not None:
            negated[i] = True
    if cue is not None:
        scopes.append((cue, len(tokens) - 1))
    return negated, [(first, last) for first, last in scopes if last > first]


def _phrase(source: str, tokens: Sequence[Token], m: _Match, negated: Sequence[bool]) -> str:
    """The words that said a match, with the negation cue when negated ("not horror")."""
    start = tokens[m.first].start
    if negated[m.first]:
        cue = m.first
        while cue > 0 and negated[cue - 1]:
            cue -= 1
        cue = max(cue - 1, 0)
        if tokens[cue].norm == "but" and cue > 0:  # "anything but horror"
            cue -= 1
        start = tokens[cue].start
    return " ".join(source[start:tokens[m.last].end].split())


def _constraints(matches: Sequence[_Match], negated: Sequence[bool], tokens: Sequence[Token], source: str,
                 vocabulary: AttributeVocabulary, turn: int) -> list[Constraint]:
    out: list[Constraint] = []
    periods = [m for m in matches if m.kind == "period"]
    wanted = [m for m in periods if not negated[m.first]]
    if wanted:
        # Several wanted periods in one turn ("the 70s or 80s") read as the span covering them.
        lows = [m.low for m in wanted]
        highs = [m.high for m in wanted]
        out.append(Constraint(wanted[0].key, low=None if None in lows else min(lows),
                              high=None if None in highs else max(highs),
                              phrase="; ".join(_phrase(source, tokens, m, negated) for m in wanted), turn=turn))
    for m in periods:
        if negated[m.first]:
            out.append(Constraint(m.key, low=m.low, high=m.high, negated=True,
                                  phrase=_phrase(source, tokens, m, negated), turn=turn))
    groups: list[list[_Match]] = []
    values = [m for m in matches if m.kind == "value"]
    for m in values:
        if negated[m.first]:
            out.append(Constraint(m.key, (m.value,), negated=True, phrase=_phrase(source, tokens, m, negated),
                                  turn=turn))
            continue
        same_key = [g for g in groups if g[0].key == m.key]
        joined = same_key and (m.key in vocabulary.single_valued or _joined_by_or(tokens, same_key[-1][-1], m))
        if joined:
            same_key[-1].append(m)
        else:
            groups.append([m])
    for group in groups:
        values_said = tuple(dict.fromkeys(m.value for m in group))
        out.append(Constraint(group[0].key, values_said,
                              phrase=" or ".join(_phrase(source, tokens, m, negated) for m in group), turn=turn))
    return out


def _joined_by_or(tokens: Sequence[Token], left: _Match, right: _Match) -> bool:
    between = [t.norm for t in tokens[left.last + 1:right.first]]
    return between == ["or"]


def _without(source: str, tokens: Sequence[Token], cut: Sequence[tuple[int, int]]) -> str:
    """The text with the cut spans removed; empty when only function words are left."""
    kept = [t for t in tokens if not any(s <= t.start and t.end <= e for s, e in cut)]
    if not any(t.norm not in STOPWORDS and t.norm not in NEGATION_CUES for t in kept):
        return ""
    pieces, last = [], 0
    for s, e in sorted(cut):
        pieces.append(source[last:s])
        last = max(last, e)
    pieces.append(source[last:])
    text = re.sub(r"\s+([,;:.!?])", r"\1", " ".join("".join(pieces).split()))
    return text.strip(" ,;:.-")
