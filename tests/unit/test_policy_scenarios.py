"""Scenario policies: defaults inherited from [default], unknown scenarios served by it, reloads."""

from __future__ import annotations

import os

import pytest

from gateway.policy.scenarios import Scenarios, parse_scenarios

FILE = """
[default]
diversity = 0.2
event_weights = { view = 0.1 }

[home]
exploration = "epsilon"
epsilon = 0.05
new_item_slots = 2
filters = { genre = ["Comedy"] }
event_weights = { purchase = 5.0 }
"""


def test_scenarios_inherit_the_default_table():
    policies = parse_scenarios(FILE)
    home = policies["home"]
    assert home.diversity == 0.2 and home.exploration == "epsilon" and home.new_item_slots == 2
    assert home.event_weights.view == 0.1 and home.event_weights.purchase == 5.0
    assert home.filters == {"genre": ["Comedy"]} and policies["default"].filters == {}


@pytest.mark.parametrize("text, message", [
    ("[home]\ndiversity = 2.0", "scenario 'home', field 'diversity'"),
    ("[home]\nexploration = 'thompson'", "field 'exploration'"),
    ("[home]\ncolour = 'red'", "field 'colour'"),
    ("home = 3", "'home' must be a table"),
    ("[home", "scenarios file"),
])
def test_a_bad_file_is_refused_naming_the_scenario_and_field(text, message):
    with pytest.raises(ValueError, match=message):
        parse_scenarios(text)


def test_unknown_scenarios_use_default_with_a_bounded_label_and_the_file_reloads(tmp_path):
    path = tmp_path / "scenarios.toml"
    path.write_text(FILE)
    now = [0.0]
    scenarios = Scenarios(path, check_interval_s=1.0, clock=lambda: now[0])
    assert scenarios.resolve("home").name == "home"
    assert (scenarios.resolve("").name, scenarios.resolve("").label) == ("default", "default")
    assert (scenarios.resolve("nope").name, scenarios.resolve("nope").label) == ("default", "other")
    assert scenarios.labels == ["default", "home", "other"]
    path.write_text(FILE + "\n[search]\ndiversity = 0.0\n")
    os.utime(path, ns=(1, 10**18))
    now[0] = 2.0
    assert scenarios.resolve("search").name == "search"
    path.write_text("[search]\ndiversity = 9\n")  # a bad edit keeps the last good policies
    os.utime(path, ns=(1, 2 * 10**18))
    now[0] = 4.0
    assert scenarios.resolve("search").policy.diversity == 0.0


def test_the_example_file_in_deploy_is_valid():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "deploy" / "scenarios.example.toml"
    policies = parse_scenarios(example.read_text(), str(example))
    assert {"default", "home", "search", "kids"} <= set(policies)
    assert policies["home"].exploration == "epsilon" and policies["kids"].event_weights.purchase == 3.0
