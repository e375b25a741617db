"""Per-scenario policies: each surface (home feed, search, detail page...) its own defaults.

A TOML file (gateway setting `scenarios_file`) maps a scenario name to a table of ScenarioPolicy fields;
the table `[default]` serves an empty or unknown scenario, and every other table starts from it:

    [default]
    diversity = 0.1

    [home]
    exploration = "epsilon"
    epsilon = 0.05
    new_item_slots = 2
    filters = { genre = ["Comedy"] }
    event_weights = { purchase = 3.0 }
    rating_weight = 0.1

The file is re-read when its modification time changes; a bad file is refused at start (with the field
named) and, once serving, logged and ignored, keeping the last good policies.
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.policy.feedback import EventWeights
from lmrec.errors import InvalidArgument
from lmrec.filters import as_filters, filter_messages, parse_filters

log = logging.getLogger(__name__)
DEFAULT = "default"
# The metrics label of requests whose scenario the file does not name (keeps the label set bounded).
OTHER = "other"


class ScenarioPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    diversity: float = Field(0.0, ge=0, le=1)
    exploration: Literal["greedy", "epsilon", "softmax"] = "greedy"
    epsilon: float = Field(0.1, ge=0, le=1)
    # Softmax temperature, in standard deviations of the candidates' scores.
    temperature: float = Field(0.5, gt=0)
    # Most candidates ranked below the list that exploration may show.
    exploration_pool: int = Field(50, ge=0, le=1000)
    new_item_slots: int = Field(0, ge=0, le=1000)
    # Candidates fetched from retrieval; None: the gateway's num_candidates.
    num_candidates: int | None = Field(None, ge=1, le=10_000)
    # Attribute filters every request of the scenario gets (AND-ed with the request's own).
    filters: dict[str, list[str]] = {}
    event_weights: EventWeights = EventWeights()
    # Weight of the predicted rating against the next-item score (RecommendRequest.rating_weight), for
    # requests that do not set one; 0: next-item only.
    rating_weight: float = Field(0.0, ge=0, allow_inf_nan=False)

    @field_validator("filters")
    @classmethod
    def _filters_retrieval_accepts(cls, filters: dict[str, list[str]]) -> dict[str, list[str]]:
        # Checked as a request's are: a filter retrieval refuses would fail every request of the scenario.
        try:
            parse_filters(filter_messages(as_filters(filters.items())), "filters")
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
        return filters


@dataclass(frozen=True)
class ResolvedScenario:
    name: str  # the policy's name: the scenario itself, or "default"
    label: str  # the metrics label: a configured name, "default", or "other"
    policy: ScenarioPolicy


def parse_scenarios(text: str, source: str = "scenarios file") -> dict[str, ScenarioPolicy]:
    """Raises ValueError naming the scenario and field when the file is not a valid policy table."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source}: {exc}") from None
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise ValueError(f"{source}: '{name}' must be a table of policy fields")
    base = raw.get(DEFAULT, {})
    policies = {}
    for name, table in {DEFAULT: base, **raw}.items():
        merged = table if name == DEFAULT else _merge(base, table)
        try:
            policies[name] = ScenarioPolicy.model_validate(merged)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{source}: scenario '{name}', field '{field}': {first['msg']}") from None
    return policies


def _merge(base: dict, override: dict) -> dict:
    """A scenario's table over the default's; event weights merge per event type, filters replace."""
    merged = {**base, **override}
    if isinstance(base.get("event_weights"), dict) and isinstance(override.get("event_weights"), dict):
        merged["event_weights"] = {**base["event_weights"], **override["event_weights"]}
    return merged


class Scenarios:
    """The current policies, re-read from `path` when it changes (checked at most every `check_interval_s`)."""

    def __init__(self, path: Path | None, check_interval_s: float = 1.0, clock=None) -> None:
        import time

        self._path = path
        self._clock = clock or time.monotonic
        self._interval = check_interval_s
        self._checked = self._clock()
        self._mtime = None
        self.policies: dict[str, ScenarioPolicy] = {DEFAULT: ScenarioPolicy()}
        if path is not None:
            self._mtime = self._stat()
            self.policies = parse_scenarios(Path(path).read_text(), str(path))

    def _stat(self):
        st = os.stat(self._path)
        return (st.st_mtime_ns, st.st_size)

    def _maybe_reload(self) -> None:
        if self._path is None or self._clock() - self._checked < self._interval:
            return
        self._checked = self._clock()
        try:
            mtime = self._stat()
            if mtime == self._mtime:
                return
            self._mtime = mtime
            self.policies = parse_scenarios(Path(self._path).read_text(), str(self._path))
            log.info("scenarios reloaded from %s: %s", self._path, sorted(self.policies))
        except (OSError, ValueError) as exc:
            log.error("scenarios file %s not reloaded, keeping the last good policies: %s", self._path, exc)

    @property
    def labels(self) -> list[str]:
        return sorted({*self.policies, OTHER})

    def resolve(self, scenario: str) -> ResolvedScenario:
        self._maybe_reload()
        if scenario in self.policies:
            return ResolvedScenario(scenario, scenario, self.policies[scenario])
        return ResolvedScenario(DEFAULT, DEFAULT if not scenario else OTHER, self.policies[DEFAULT])
