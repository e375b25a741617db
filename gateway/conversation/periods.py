"""Time expressions of a turn read against the catalogue's time axis (its year-valued attribute).

"from the 80s", "the 1980s", "eighties", "1985", "before 1980", "after the 90s", "between 1970 and 1985",
and "older" / "newer" relative to the years of the items just shown. Two-digit decades take the century
in which the catalogue has items, the latest when several do.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.conversation.vocabulary import as_year

_DECADE_WORDS = {w: d for d, w in enumerate(
    "_ _ twenties thirties forties fifties sixties seventies eighties nineties".split()) if w != "_"}
# One period: a decade ("1980s", "80s", "'80s", "eighties") or a year ("1985").
_PERIOD = (r"(?:(?P<{p}d4>1\d\d0|2\d\d0)'?s|'?(?P<{p}d2>\d0)'?s|(?P<{p}word>" + "|".join(_DECADE_WORDS)
           + r")|(?P<{p}year>1\d\d\d|2\d\d\d))")
_LEAD = r"(?:(?:from|in|during|of)\s+)?(?:the\s+)?"
_BEFORE = ("before", "until", "till", "pre", "earlier than", "older than")
_AFTER = ("after", "post", "later than", "newer than")
_SINCE = ("since",)
_MODIFIER = "|".join(re.escape(m) for m in (*_BEFORE, *_AFTER, *_SINCE))
_RANGE = re.compile(rf"\b(?:between\s+|from\s+)?(?:the\s+)?{_PERIOD.format(p='a')}\s*(?:-|–|to|and|until)\s*"
                    rf"(?:the\s+)?{_PERIOD.format(p='b')}(?![\w'])")
_SINGLE = re.compile(rf"\b(?:(?P<mod>{_MODIFIER})[\s-]+)?{_LEAD}{_PERIOD.format(p='s')}(?![\w'])")
_RELATIVE = re.compile(r"\b(?P<rel>older|earlier|newer|more recent)\b")


@dataclass(frozen=True)
class Period:
    """A year range said in the text, [low, high] with open ends as None, and where it was said."""

    low: int | None
    high: int | None
    start: int
    end: int
    phrase: str


def _bounds(match: re.Match, p: str, years: Sequence[int]) -> tuple[int, int] | None:
    if match.group(f"{p}d4"):
        low = int(match.group(f"{p}d4"))
        return low, low + 9
    if match.group(f"{p}year"):
        year = int(match.group(f"{p}year"))
        return year, year
    digit = int(match.group(f"{p}d2")[0]) if match.group(f"{p}d2") else _DECADE_WORDS[match.group(f"{p}word")]
    return _century(digit, years)


def _century(digit: int, years: Sequence[int]) -> tuple[int, int]:
    """The decade `digit`0s in the century where the catalogue has items (the latest such), else 1900s."""
    held = [c * 100 + digit * 10 for c in (20, 19, 18) if any(c * 100 + digit * 10 <= y <= c * 100 + digit * 10 + 9
                                                               for y in years)]
    low = held[0] if held else 1900 + digit * 10
    return low, low + 9


def find_periods(text: str, years: Sequence[int], shown_years: Sequence[int] = ()) -> tuple[list[Period], list[str]]:
    """The year ranges said in `text` (lower-cased by the caller), and notes on those it could not read.

    Args:
        text: the turn, lower-cased (spans index into it).
        years: the years the catalogue has items for.
        shown_years: years of the items shown by the previous turn ("older" is older than those).
    """
    periods: list[Period] = []
    taken: list[tuple[int, int]] = []
    for match in _RANGE.finditer(text):
        a, b = _bounds(match, "a", years), _bounds(match, "b", years)
        if a and b:
            periods.append(Period(min(a[0], b[0]), max(a[1], b[1]), match.start(), match.end(), match.group(0)))
            taken.append(match.span())
    for match in _SINGLE.finditer(text):
        if any(s < match.end() and match.start() < e for s, e in taken):
            continue
        low, high = _bounds(match, "s", years)
        mod = match.group("mod")
        if mod in _BEFORE:
            low, high = None, low - 1
        elif mod in _AFTER:
            low, high = high + 1, None
        elif mod in _SINCE:
            high = None
        periods.append(Period(low, high, match.start(), match.end(), match.group(0).strip()))
        taken.append(match.span())
    notes = []
    if not periods:
        for match in _RELATIVE.finditer(text):
            if not shown_years:
                notes.append(f"“{match.group(0)}”: nothing was shown yet to compare with")
                continue
            middle = int(statistics.median(shown_years))
            older = match.group("rel") in ("older", "earlier")
            periods.append(Period(None if older else middle + 1, middle - 1 if older else None,
                                  match.start(), match.end(), match.group(0)))
            break
    return periods, notes


def decade_text(low: int) -> str:
    return f"from the {low}s"


def years_of(attributes: Sequence[Mapping[str, Sequence[str]]], key: str) -> list[int]:
    """The years (as numbers) the given items hold on `key`."""
    return [y for a in attributes for v in a.get(key, ()) if (y := as_year(v)) is not None]
