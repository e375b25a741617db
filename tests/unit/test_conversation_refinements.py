"""Refinement chips: offered when the best candidates spread over an attribute's values, chosen to split
them evenly, never a value the session already asked for, and readable back as the next turn."""

from __future__ import annotations

from gateway.conversation.constraints import Constraint
from gateway.conversation.critique import ShownContext, parse_turn
from gateway.conversation.refinements import MAX_CHIPS, MIN_CHIPS, suggest_refinements
from gateway.conversation.vocabulary import AttributeVocabulary

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Thriller"]


def broad_candidates(n: int = 40) -> list[dict[str, list[str]]]:
    """Genres spread evenly, years over three decades."""
    return [{"genre": [GENRES[i % len(GENRES)]], "year": [str(1975 + (i * 7) % 30)]} for i in range(n)]


def test_a_broad_answer_gets_three_to_five_chips_that_split_it():
    candidates = broad_candidates()
    vocabulary = AttributeVocabulary.from_items({str(i): a for i, a in enumerate(candidates)})
    chips = suggest_refinements(candidates, vocabulary)
    assert MIN_CHIPS <= len(chips) <= MAX_CHIPS
    # Decades hold about a third of the candidates each: they split better than a genre's sixth.
    assert chips[0].key == "year" and chips[0].text.startswith("from the ") and ".." in chips[0].value
    for chip in chips:
        parsed = parse_turn(chip.text, vocabulary, ShownContext(), 2)
        (constraint,) = parsed.constraints
        assert constraint.key == chip.key
        if chip.key == "year":
            assert f"{constraint.low}..{constraint.high}" == chip.value
        else:
            assert constraint.values == (chip.value,)


def test_a_focused_answer_gets_no_chips():
    focused = [{"genre": ["Horror"], "year": ["1980"]} for _ in range(30)]
    vocabulary = AttributeVocabulary.from_items({str(i): a for i, a in enumerate(focused)})
    assert suggest_refinements(focused, vocabulary) == []
    assert suggest_refinements([], vocabulary) == []


def test_values_already_asked_for_are_never_suggested():
    candidates = broad_candidates()
    vocabulary = AttributeVocabulary.from_items({str(i): a for i, a in enumerate(candidates)})
    asked = [Constraint("genre", ("Comedy",)), Constraint("genre", ("Horror",), negated=True)]
    chips = suggest_refinements(candidates, vocabulary, asked)
    assert not {("genre", "Comedy"), ("genre", "Horror")} & {(c.key, c.value) for c in chips}


def test_product_catalogues_get_chips_from_their_own_keys():
    products = [{"brand": [b], "category": ["Cameras"]} for b in ("Sony", "Canon", "Nikon", "Fuji") * 10]
    vocabulary = AttributeVocabulary.from_items({str(i): a for i, a in enumerate(products)})
    chips = suggest_refinements(products, vocabulary)
    assert {c.text for c in chips} == {"Sony", "Canon", "Nikon", "Fuji"} and {c.key for c in chips} == {"brand"}
