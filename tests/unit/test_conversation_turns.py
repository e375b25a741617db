"""A session's turns merged into one plan: the newest turn wins conflicts, references and feedback become
context and negative items, the free text weighs newest most, and retries replay a turn."""

from __future__ import annotations

from gateway.conversation.constraints import Constraint, apply_constraints, merge_constraints
from gateway.conversation.critique import ShownContext, parse_turn
from gateway.conversation.sessions import Session, StoredTurn
from gateway.conversation.turns import SESSION_ITEM_WEIGHT, TURN_DECAY, plan_turn, weighted_query
from gateway.conversation.vocabulary import AttributeVocabulary
from lmrec.catalog import CatalogItem

ATTRS = {
    "1": {"genre": ["Action"], "year": ["1985"]},
    "2": {"genre": ["Action", "Comedy"], "year": ["1987"]},
    "3": {"genre": ["Action", "Horror"], "year": ["1982"]},
    "4": {"genre": ["Comedy"], "year": ["1995"]},
    "5": {"genre": ["Action", "Comedy"], "year": ["1996"]},
    "6": {"genre": ["Drama"], "year": ["1960"]},
}
CATALOG = {i: CatalogItem(i, f"Film {i} ({a['year'][0]})", f"Film {i}", a) for i, a in ATTRS.items()}
VOCAB = AttributeVocabulary.from_items(ATTRS)


def described(constraints) -> list[str]:
    return sorted(c.describe() for c in constraints)


def test_the_newest_turn_wins_a_conflict():
    single = VOCAB.single_valued
    action, comedy = Constraint("genre", ("Action",), turn=1), Constraint("genre", ("Comedy",), turn=2)
    not_action = Constraint("genre", ("Action",), negated=True, turn=3)
    assert described(merge_constraints([[action], [comedy]], single)) == ["genre Action", "genre Comedy"]
    assert described(merge_constraints([[action], [comedy], [not_action]], single)) == ["genre Comedy",
                                                                                       "not genre Action"]
    assert described(merge_constraints([[not_action], [action]], single)) == ["genre Action"]
    eighties = Constraint("year", low=1980, high=1989, turn=1)
    nineties = Constraint("year", low=1990, high=1999, turn=2)
    assert described(merge_constraints([[eighties], [nineties]], single)) == ["year 1990..1999"]
    either = Constraint("genre", ("Action", "Comedy"), turn=1)
    assert described(merge_constraints([[either], [not_action]], single)) == ["genre Comedy", "not genre Action"]
    # A single-valued key: a newer wanted value replaces the older one.
    brands = frozenset({"brand"})
    assert described(merge_constraints([[Constraint("brand", ("Sony",))], [Constraint("brand", ("Canon",))]],
                                       brands)) == ["brand Canon"]


def test_constraints_become_filters_exclusions_or_a_note_when_nothing_has_them():
    active = [Constraint("genre", ("Action",)), Constraint("year", low=1980, high=1989),
              Constraint("genre", ("Horror",), negated=True), Constraint("year", low=1900, high=1909)]
    applied = apply_constraints(active, VOCAB)
    assert applied.filters == [("genre", ["Action"]), ("year", ["1982", "1985", "1987"])]
    assert applied.excluded == {"3"}
    assert [c.describe() for c in applied.unmet] == ["year 1900..1909"]


def turn(number, text, vocabulary=VOCAB, shown=(), last=()) -> StoredTurn:
    parsed = parse_turn(text, vocabulary, ShownContext(last=tuple(last)), number)
    return StoredTurn(number, f"r{number}", parsed, tuple(shown), 0)


def test_a_plan_merges_the_session_and_points_at_shown_items():
    session = Session("u", "s", (turn(1, "an action movie", shown=["1", "2", "3"]),
                                 turn(2, "from the 80s", shown=["2", "1", "3"], last=["1", "2", "3"])),
                      feedback=(("4", False),), next_turn=3)
    plan = plan_turn(session, "not horror, more like the second one", "r3", VOCAB, CATALOG)
    assert plan.number == 3
    assert described(plan.active) == ["genre Action", "not genre Horror", "year 1980..1989"]
    assert plan.meets(ATTRS["1"]) and not plan.meets(ATTRS["3"]) and not plan.meets(ATTRS["5"])
    # "the second one" is the second item the previous turn showed: item 1.
    assert plan.context_items == [("1", SESSION_ITEM_WEIGHT)] and plan.pointed == {"1": 3}
    assert plan.negative_items == [("4", 1.0)]
    assert {"1", "3", "4"} <= plan.excluded
    assert plan.matches(ATTRS["2"]) == ((2, "from the 80s"), (1, "action"))
    # Texts newest first: this turn's own words were all read (a negation, a reference), none left.
    assert plan.query == "from the 80s. an action movie" and plan.query_label == "from the 80s"


def test_older_pointers_weigh_less_and_a_newer_one_replaces_an_older():
    session = Session("u", "s", (turn(1, "action", shown=["1", "2"]),
                                 turn(2, "more like the first one", shown=["2", "3"], last=["1", "2"]),
                                 turn(3, "comedy", shown=["2", "5"])), next_turn=4)
    plan = plan_turn(session, "", "r4", VOCAB, CATALOG)
    assert plan.context_items == [("1", SESSION_ITEM_WEIGHT * TURN_DECAY ** 2)]
    session = Session("u", "s", session.turns, feedback=(("1", False),), next_turn=4)
    plan = plan_turn(session, "", "r4", VOCAB, CATALOG)
    assert plan.context_items == [] and plan.negative_items == [("1", 1.0)]


def test_a_retried_request_replays_its_turn_instead_of_adding_one():
    session = Session("u", "s", (turn(1, "action", shown=["1", "2"]), turn(2, "comedy", shown=["2", "5"])),
                      next_turn=3)
    plan = plan_turn(session, "horror", "r2", VOCAB, CATALOG)
    assert plan.number == 2
    assert described(plan.active) == ["genre Action", "genre Horror"]


def test_unknown_critiques_and_impossible_constraints_leave_a_note():
    empty = Session("u", "s")
    plan = plan_turn(empty, "something lighter", "r1", VOCAB, CATALOG)
    assert plan.active == [] and plan.query == "something lighter. something lighter"
    assert any("text only" in n for n in plan.notes)
    plan = plan_turn(empty, "a drama from the 1930s", "r1", VOCAB, CATALOG)
    assert described(plan.active) == ["genre Drama"]
    assert any("1930s" in n and "not applied" in n for n in plan.notes)


def test_the_weighted_query_repeats_the_newest_and_forgets_old_texts():
    assert weighted_query(["a", "b", "c", "d"]) == "d. d. c. b"
    assert weighted_query(["a", "b", "c", ""]) == "c. b"  # ages count turns, texts or not
    assert weighted_query([]) == ""
