"""Feedback semantics: dismissals and low ratings are negatives, other events interest with a weight."""

from __future__ import annotations

from gateway.policy.feedback import CLICK, DISMISS, PURCHASE, RATING, VIEW, EventWeights, is_negative, read_feedback


def test_dismissals_and_ratings_below_the_threshold_are_negatives():
    assert is_negative(DISMISS, 0.0, 3.0)
    assert is_negative(RATING, 2.9, 3.0) and is_negative(RATING, 1.0, 3.0)
    assert not is_negative(RATING, 3.0, 3.0) and not is_negative(CLICK, 0.0, 3.0)


def test_an_items_latest_event_decides_and_its_strongest_interest_weighs():
    weights = EventWeights(view=0.5, click=1.0, rating=1.0, purchase=2.0)
    events = [("a", VIEW, 0.0), ("b", PURCHASE, 0.0), ("c", CLICK, 0.0), ("a", DISMISS, 0.0),
              ("b", VIEW, 0.0), ("d", RATING, 2.0), ("e", RATING, 5.0), ("g", RATING, 1.0)]
    got = read_feedback(events, ["f", "c"], weights.model_copy(update={"low_rating": 0.25}), 3.0)
    # a: dismissed after its view; b: purchase then view keeps the purchase's weight and the latest place.
    assert got.positive == ["b", "e", "f", "c"]
    assert got.weights == [2.0, 1.0, 0.5, 1.0]
    assert got.negative == ["a", "d", "g"]
    assert got.negative_weights == [1.0, 0.25, 0.25]
    assert got.seen == {"a", "b", "c", "d", "e", "f", "g"}


def test_a_dismissed_item_clicked_again_is_interest_again():
    got = read_feedback([("a", DISMISS, 0.0), ("a", CLICK, 0.0)], [], EventWeights(), 3.0)
    assert got.positive == ["a"] and got.negative == []
