"""The contract every offline model (baselines and the LM recommender) implements for the harness."""

from __future__ import annotations

from abc import ABC, abstractmethod
import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.split import Phase, SplitData


class Recommender(ABC):
    """A model the evaluation harness can tune, fit and score.

    Lifecycle, driven by training/evaluate.py:
      1. for each candidate params dict: `model = factory(**params)`; `model.fit(data, "validation")`;
         the harness scores `data.eval_users("validation")` and keeps the params with the best
         validation NDCG@10;
      2. `model = factory(**best_params, **model.fitted_params())`; `model.fit(data, "test")`; the
         harness scores every user against `data.test_items`.

    In `fit`, use `data.history_sequences(phase)` / `data.history_matrix(phase)` as the user
    histories, `data.item_texts` / `data.item_titles` as content. In the validation phase
    `data.val_items` may be used (e.g. early stopping); never read `data.test_items`.

    `score(user_idx)` returns float scores of shape [len(user_idx), data.n_items], higher is better,
    for the phase of the last `fit`. Score every item; the harness sets the user's own history items
    to -inf itself and ranks over the whole catalogue (ties count against the target). No NaN.
    """

    name: str = "recommender"

    @abstractmethod
    def fit(self, data: SplitData, phase: Phase) -> None:
        """Learns from the history of `phase`; may be called again for another phase."""

    @abstractmethod
    def score(self, user_idx: np.ndarray) -> np.ndarray:
        """Scores every catalogue item for the given dense user indices."""

    def fitted_params(self) -> dict[str, Any]:
        """Params learnt during a validation fit to reuse when refitting for test (e.g. best epoch)."""
        return {}


ModelFactory = Callable[..., Recommender]
GridFn = Callable[[bool], list[dict]]


@dataclass(frozen=True)
class ModelEntry:
    """How to build one named model: `factory(args, **params)` for each params dict of `grid(quick)`."""

    factory: ModelFactory
    grid: GridFn = field(default=lambda quick: [{}])
    baseline: bool = False
    # Overrides `grid` when set: the grid may depend on the CLI options (e.g. none for a pre-trained model).
    grid_from_args: Callable[[argparse.Namespace], list[dict]] | None = None
