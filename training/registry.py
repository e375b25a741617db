"""The evaluation harness's models by name: the baselines, registered here, and the plug-ins (the LM
recommender, the served system) loaded when a run names them."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from training.baselines import BASELINES
from training.protocols import GridFn, ModelEntry, ModelFactory, Recommender

MODEL_FACTORIES: dict[str, ModelEntry] = {}
def register_model(name: str, factory: ModelFactory, grid: GridFn | None = None, baseline: bool = False,
                   grid_from_args: Callable[[argparse.Namespace], list[dict]] | None = None) -> None:
    """Makes `name` available to `--models`.

    Args:
        name: the `--models` name and the key in results.json.
        factory: `factory(args: argparse.Namespace, **params) -> Recommender`; `args` carries the CLI
            options (seed, quick, model options).
        grid: `grid(quick) -> list[params]` tuned on validation NDCG@10; default `[{}]` (one validation
            fit, reported but nothing to choose); `[]` skips the validation phase altogether.
        baseline: whether the model competes for "best baseline" in the significance tests.
        grid_from_args: like `grid` but given the parsed CLI arguments; wins over `grid` when set.
    """
    MODEL_FACTORIES[name] = ModelEntry(factory, grid or (lambda quick: [{}]), baseline, grid_from_args)


def _baseline_factory(cls: type) -> ModelFactory:
    def build(args: argparse.Namespace, **params) -> Recommender:
        return cls(seed=args.seed, **params)

    return build


for _name, _cls in BASELINES.items():
    register_model(_name, _baseline_factory(_cls), _cls.param_grid, baseline=True)


def _lm_models() -> dict[str, ModelEntry]:
    from training.lm_recommender import model_entries

    return model_entries()


def _served_models() -> dict[str, ModelEntry]:
    from training.remote_eval import model_entries

    return model_entries()


# Models whose code needs more than the baselines do (torch and the LM; a gRPC target), loaded when named.
PLUGINS: dict[str, Callable[[], dict[str, ModelEntry]]] = {
    "lmrec": _lm_models, "lmrec-fp32": _lm_models, "served": _served_models}
REPO_PACKAGES = ("training", "lmrec", "lmrec_data", "ranking_service", "gateway", "retrieval_service")


def resolve_models(names: list[str]) -> tuple[dict[str, ModelEntry], dict[str, str]]:
    """Registered entries for `names`, loading plug-ins; returns (entries, skipped -> reason). A plug-in
    is skipped only when a third-party package it needs is not installed; any other failure surfaces."""
    entries, skipped = {}, {}
    for name in names:
        if name not in MODEL_FACTORIES and name in PLUGINS:
            try:
                MODEL_FACTORIES.update(PLUGINS[name]())
            except ModuleNotFoundError as exc:
                if exc.name is None or exc.name.split(".")[0] in REPO_PACKAGES:
                    raise
                skipped[name] = f"needs {exc.name}, which is not installed (the training extra)"
                continue
        if name in MODEL_FACTORIES:
            entries[name] = MODEL_FACTORIES[name]
        else:
            raise ValueError(f"unknown model {name!r}; known: {sorted(set(MODEL_FACTORIES) | set(PLUGINS))}")
    return entries, skipped
