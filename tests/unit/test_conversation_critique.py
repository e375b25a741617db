"""A turn's text read against the catalogue's own vocabulary: values, negations, time ranges, references
to shown items, and text that names nothing, on a movie catalogue and on a product catalogue alike."""

from __future__ import annotations

import pytest

from gateway.conversation.critique import ShownContext, parse_turn
from gateway.conversation.vocabulary import AttributeVocabulary, tokenize

MOVIES = {
    "1": {"genre": ["Action", "Sci-Fi"], "year": ["1977"]},
    "2": {"genre": ["Comedy", "Children's"], "year": ["1995"]},
    "3": {"genre": ["Horror"], "year": ["1980"]},
    "4": {"genre": ["Comedy", "Romance"], "year": ["1984"]},
    "5": {"genre": ["Film-Noir", "Thriller"], "year": ["1946"]},
    "6": {"genre": ["Drama"], "year": ["1921"]},
}
TITLES = {"1": "Star Wars (1977)", "2": "Toy Story (1995)", "3": "Shining, The (1980)"}
PRODUCTS = {
    "p1": {"brand": ["Sony"], "category": ["Cameras", "Electronics"], "condition": ["Refurbished"]},
    "p2": {"brand": ["Canon"], "category": ["Cameras"], "condition": ["New"]},
    "p3": {"brand": ["Bose"], "category": ["Headphones", "Electronics"], "condition": ["New"]},
}


@pytest.fixture(scope="module")
def movies() -> AttributeVocabulary:
    return AttributeVocabulary.from_items(MOVIES)


def said(text, vocabulary, shown=ShownContext(), turn=1):
    parsed = parse_turn(text, vocabulary, shown, turn)
    return parsed, sorted(c.describe() for c in parsed.constraints)


def test_the_vocabulary_is_the_catalogues_own_keys_and_values():
    movies = AttributeVocabulary.from_items(MOVIES)
    assert movies.year_key == "year" and movies.year_span == (1921, 1995)
    assert movies.phrases[("comedy",)] == ("genre", "Comedy")
    assert movies.phrases[("children",)] == ("genre", "Children's")
    assert movies.phrases[("scifi",)] == movies.phrases[("sci", "fi")] == ("genre", "Sci-Fi")
    assert movies.single_valued == frozenset({"year"})
    products = AttributeVocabulary.from_items(PRODUCTS)
    assert products.year_key is None
    assert products.single_valued == frozenset({"brand", "condition"})
    assert ("horror",) not in products.phrases and products.phrases[("sony",)] == ("brand", "Sony")


def test_values_are_matched_in_any_inflection_and_alternatives_need_or(movies):
    assert said("an action movie", movies)[1] == ["genre Action"]
    assert said("some COMEDIES for the kids' night", movies)[1] == ["genre Comedy"]
    assert said("children's films", movies)[1] == ["genre Children's"]
    assert said("comedy or horror", movies)[1] == ["genre Comedy or Horror"]
    assert said("an action comedy", movies)[1] == ["genre Action", "genre Comedy"]
    assert said("sci-fi", movies)[1] == said("scifi", movies)[1] == ["genre Sci-Fi"]


@pytest.mark.parametrize("text", ["not horror", "no horror please", "without horror", "anything but horror",
                                  "I don't want horror", "less horror"])
def test_negations_exclude_and_leave_the_text(movies, text):
    parsed, constraints = said(text, movies)
    assert constraints == ["not genre Horror"]
    assert "horror" not in parsed.query_text.lower()
    assert parsed.constraints[0].phrase.lower().endswith("horror")


def test_a_negation_ends_with_its_clause(movies):
    assert said("not horror but a comedy", movies)[1] == ["genre Comedy", "not genre Horror"]
    assert said("no horror, a thriller", movies)[1] == ["genre Thriller", "not genre Horror"]
    assert said("not horror or thriller", movies)[1] == ["not genre Horror", "not genre Thriller"]
    parsed, constraints = said("a comedy, not from the 80s", movies)
    assert constraints == ["genre Comedy", "not year 1980..1989"]
    assert parsed.query_text == "a comedy"


def test_time_ranges_read_against_the_catalogues_years(movies):
    assert said("older, from the 80s", movies)[1] == ["year 1980..1989"]
    assert said("the 1940s", movies)[1] == ["year 1940..1949"]
    assert said("eighties", movies)[1] == ["year 1980..1989"]
    assert said("something from the 20s", movies)[1] == ["year 1920..1929"]  # the century the catalogue has
    assert said("before 1980", movies)[1] == ["year ..1979"]
    assert said("between 1970 and 1985", movies)[1] == ["year 1970..1985"]
    shown = ShownContext(last=("2", "4"), last_years=(1995, 1984, 1990))
    assert said("older", movies, shown)[1] == ["year ..1989"]
    parsed, constraints = said("older", movies)
    assert constraints == [] and any("nothing was shown yet" in n for n in parsed.notes)
    # A catalogue without a time axis reads years as nothing.
    assert said("from the 80s", AttributeVocabulary.from_items(PRODUCTS))[1] == []


def test_references_point_at_the_items_shown_by_the_previous_turn(movies):
    shown = ShownContext(last=("1", "2", "3"), titles=TITLES)
    parsed, constraints = said("more like the second one", movies, shown)
    assert constraints == [] and [(r.item_id, r.positive) for r in parsed.references] == [("2", True)]
    assert parsed.query_text == "" and not parsed.notes
    last = said("less like the last one", movies, shown)[0].references
    assert [(r.item_id, r.positive) for r in last] == [("3", False)]
    assert [(r.item_id, r.positive) for r in said("not the first one", movies, shown)[0].references] == [("1", False)]
    assert [r.item_id for r in said("#2 looks good", movies, shown)[0].references] == ["2"]
    # "that" is the item pointed at last, else the top one.
    assert [r.item_id for r in said("less like that", movies, shown)[0].references] == ["1"]
    pointed = ShownContext(last=("1", "2", "3"), titles=TITLES, last_reference="3")
    assert [(r.item_id, r.positive) for r in said("less like that", movies, pointed)[0].references] == [("3", False)]
    # Titles of shown items, without year or article, take precedence over the values inside them.
    parsed, constraints = said("more like star wars but a comedy", movies, shown)
    assert [r.item_id for r in parsed.references] == ["1"] and constraints == ["genre Comedy"]
    assert [r.item_id for r in said("like the shining", movies, shown)[0].references] == ["3"]


def test_references_that_point_at_nothing_say_so(movies):
    parsed, _ = said("more like the second one", movies)
    assert parsed.references == () and any("nothing was shown yet" in n for n in parsed.notes)
    parsed, _ = said("the fifth one", movies, ShownContext(last=("1", "2")))
    assert parsed.references == () and any("only 2 items were shown" in n for n in parsed.notes)
    assert said("the second genre", movies, ShownContext(last=("1", "2")))[0].references == ()


def test_text_that_names_no_attribute_is_read_as_text_only_and_says_so(movies):
    parsed, constraints = said("something lighter", movies)
    assert constraints == [] and parsed.text_only and parsed.query_text == "something lighter"
    assert any("names no attribute" in n and "text only" in n for n in parsed.notes)
    parsed, constraints = said("something lighter, not so violent", movies)
    assert constraints == [] and parsed.query_text == "something lighter"
    assert any("not so violent" in n and "left out" in n for n in parsed.notes)
    assert said("", movies)[0].notes == ()


def test_the_same_code_reads_a_product_catalogue():
    products = AttributeVocabulary.from_items(PRODUCTS)
    parsed, constraints = said("a sony camera, not refurbished", products)
    assert constraints == ["brand Sony", "category Cameras", "not condition Refurbished"]
    # Brands are single-valued: two in one turn are alternatives.
    assert said("sony or canon, no headphones", products)[1] == ["brand Sony or Canon", "not category Headphones"]
    assert said("bose canon", products)[1] == ["brand Bose or Canon"]


def test_parsed_turns_survive_storage(movies):
    from gateway.conversation.critique import ParsedTurn

    parsed = parse_turn("more like the second one, not from the 80s", movies, ShownContext(last=("1", "2")), 3)
    assert ParsedTurn.from_dict(parsed.to_dict()) == parsed


def test_tokens_keep_their_spans_and_fold_possessives_and_contractions():
    tokens = tokenize("Children's films don't")
    assert [t.norm for t in tokens] == ["children", "film", "not"]
    assert [("Children's films don't"[t.start:t.end]) for t in tokens] == ["Children's", "films", "don't"]


def test_the_vocabulary_follows_catalogue_changes_at_most_every_interval():
    from gateway.conversation.vocabulary import VocabularyCache

    items = dict(MOVIES)
    version, now = [0], [0.0]
    cache = VocabularyCache(lambda: items, lambda: version[0], min_interval_s=2.0, clock=lambda: now[0])
    assert ("western",) not in cache.get().phrases
    items["7"] = {"genre": ["Western"], "year": ["1950"]}
    version[0] += 1
    now[0] += 1.0
    assert ("western",) not in cache.get().phrases  # changed, but rebuilt less than 2 s ago
    now[0] += 1.5
    assert cache.get().phrases[("western",)] == ("genre", "Western")
