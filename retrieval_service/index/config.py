"""The index's knobs, taken from `RetrievalSettings`, where each is declared once with its default, bounds and why."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, create_model

from retrieval_service.settings import RetrievalSettings

# The settings fields the index reads. Their types, defaults and bounds come from the settings model, so an
# index built in a test or a bench validates its knobs exactly as a server's flags are validated.
_KNOBS = (
    "m",
    "ef_construction",
    "initial_capacity",
    "ef_default",
    "ef_min",
    "ef_max",
    "exact_scan_threshold",
    "walk_cost_per_ef",
    "tombstone_rebuild_ratio",
    "build_threads",
    "exact_scan_dtype",
    "filter_graph_share",
    "filter_graph_m",
)


class _IndexKnobs(BaseModel):
    # Frozen: a retuned knob is a new config swapped in whole, so a search never sees half of a change.
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_settings(cls, settings: RetrievalSettings, **overrides) -> IndexConfig:
        """The index's part of `settings` (or anything with the same fields), with `overrides` on top."""
        return cls(**{**{name: getattr(settings, name) for name in _KNOBS}, **overrides})

    @classmethod
    def without_settings(cls, **knobs) -> IndexConfig:
        """The settings' defaults, except that filter graphs stay off unless asked for: an index built outside
        a server (a test, a bench, a tool) starts no background builds and keeps no second copy of vectors."""
        return cls(**{"filter_graph_share": 0.0, **knobs})

    def replaced(self, **changes) -> IndexConfig:
        """A validated copy with `changes` applied."""
        return type(self)(**{**self.model_dump(), **changes})

    @property
    def value_graph_m(self) -> int:
        """hnswlib M of the per-value filter graphs."""
        return self.filter_graph_m or self.m


_FIELDS = RetrievalSettings.model_fields
IndexConfig = create_model(
    "IndexConfig",
    __base__=_IndexKnobs,
    __module__=__name__,
    **{name: (_FIELDS[name].annotation, _FIELDS[name]) for name in _KNOBS},
)
IndexConfig.__doc__ = "HNSW, planner, rebuild and filter-graph knobs of one `VectorIndex` (see RetrievalSettings)."
