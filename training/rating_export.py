"""Puts the rating head into a bundle: fitted on the bundle's own trunk, as `lmrec train` exports it.

The head (training/rating_head.py) reads the trunk the way the ranking tier serves it: the bundle's FP32
context graph (ĥ before the serving event-weight blend, scenario none) and its items' collaborative
vectors. It is fitted on the ratings of the bundle's phase history (every interaction for a production
bundle, train + validation for an evaluation bundle) with the configuration bench/multitask_eval.py chose
on ML-100K validation RMSE, and written as `rating_head.npz` (ranking_service/rating_head.py) with its item
biases keyed by item id. Data without ratings gets no head: the manifest says `rating_head: null` and why.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np

from lmrec_data.datasets import Dataset
from lmrec.bundle import Bundle, Manifest
from lmrec.errors import ArtifactMismatch
from ranking_service.onnx_session import RuntimeChoice, new_session
from ranking_service.rating_head import RATING_HEAD_FILE, ServedRatingHead, write_rating_head
from training.rating_head import (RatingHeadConfig, RatingHeadUnavailable, fit_rating_head, phase_ratings,
                                  prefix_contexts, rating_lookup)
from training.split import SplitData

log = logging.getLogger(__name__)

# docs/evaluation/ml-100k_multitask.json, rating.rows["rating head"].config: the MLP-64 head at item and user
# shrinkage 1, best validation RMSE at epoch 37 (lr 5e-4). About a minute on ML-100K on 2 cores.
EXPORT_CONFIG = RatingHeadConfig(hidden=64, examples="next", item_shrinkage=1.0, user_shrinkage=1.0,
                                 weight_decay=1e-4, lr=5e-4, batch_size=512, epochs=37)
# `lmrec train --config tiny` (CI): the same head, two epochs.
TINY_EPOCHS = 2
# Users whose served predictions are checked against the offline head at export.
PARITY_USERS = 50
PARITY_ITEMS = 200


def export_config(tiny: bool) -> RatingHeadConfig:
    return RatingHeadConfig(**{**EXPORT_CONFIG.as_dict(), "epochs": TINY_EPOCHS}) if tiny else EXPORT_CONFIG


class BundleTrunk:
    """The bundle's next-item trunk as the head reads it: the FP32 context graph (ĥ before any serving-time
    blend) and every catalogue item's collaborative vector e, in the split's item order."""

    def __init__(self, bundle: Bundle, data: SplitData) -> None:
        hp = bundle.manifest.hyperparameters
        self.dim = int(hp["dim"])
        self.max_len = int(hp["max_len"])
        ids = json.loads(bundle.file("catalogue_ids").read_text())
        if ids != list(data.item_ids):
            raise ArtifactMismatch(f"{bundle.dir}: its catalogue order differs from the split's")
        self.item_vectors = np.load(bundle.file("item_vectors"))[:, :self.dim].astype(np.float32)
        runtime = RuntimeChoice("fp32", ["CPUExecutionProvider"])
        self._session = new_session(bundle.path("context", "fp32"), runtime, 1, 1)
        # A scenario-aware bundle's graph also reads a scenario index; ratings are scenario-blind (0 = none).
        self._scenario = any(i.name == "scenario" for i in self._session.get_inputs())

    def encode(self, histories: list[np.ndarray]) -> np.ndarray:
        length = max(len(h) for h in histories)
        batch = np.zeros((len(histories), length, self.dim), dtype=np.float32)
        mask = np.zeros((len(histories), length), dtype=np.float32)
        for row, h in enumerate(histories):  # left-padded, as the ContextModel expects
            batch[row, length - len(h):] = self.item_vectors[h]
            mask[row, length - len(h):] = 1.0
        feeds = {"history": batch, "mask": mask}
        if self._scenario:
            feeds["scenario"] = np.zeros(len(histories), dtype=np.int64)
        return self._session.run(None, feeds)[0]


def add_rating_head(bundle: Bundle, dataset: Dataset, data: SplitData, config: RatingHeadConfig) -> Manifest:
    """Fits the head on the bundle's trunk over the ratings of `data`'s test-phase history (the history the
    bundle was fitted on), writes it into `bundle`, and returns the manifest that lists it.

    Args:
        bundle: the bundle being built (export_bundle's staging directory and its manifest).
        dataset: the interactions `data` was built from (their ratings).
    Returns:
        The manifest with extra file `rating_head` and hyperparameter `rating_head` (its config and epochs),
        or, when the history carries no rating, `rating_head: None` and `rating_head_absent` saying why.
    """
    manifest = bundle.manifest
    try:
        lookup = rating_lookup(dataset, data)
        trunk = BundleTrunk(bundle, data)
        histories = data.history_sequences("test")
        ratings, _ = phase_ratings(data, lookup, "test")
        started = time.perf_counter()
        contexts = prefix_contexts(trunk.encode, histories, trunk.max_len)
        head, _ = fit_rating_head(contexts, histories, ratings, trunk.item_vectors, config)
    except RatingHeadUnavailable as exc:
        log.info("bundle %s: %s", manifest.model_version, exc)
        return manifest.model_copy(update={"hyperparameters": {
            **manifest.hyperparameters, "rating_head": None, "rating_head_absent": str(exc)}})
    seconds = round(time.perf_counter() - started, 1)
    write_rating_head(bundle.dir / RATING_HEAD_FILE, head, list(data.item_ids))
    served = ServedRatingHead.load(bundle.dir / RATING_HEAD_FILE, trunk.dim)
    rated = int(sum(np.isfinite(r).sum() for r in ratings))
    log.info("bundle %s: rating head fitted on %d ratings in %.1f s", manifest.model_version, rated, seconds)
    return manifest.model_copy(update={
        "hyperparameters": {**manifest.hyperparameters, "rating_head": {
            "config": config.as_dict(), "epochs": config.epochs, "fit_phase": "test", "scenario": "none",
            "rule": "configuration chosen on ML-100K validation RMSE (bench/multitask_eval.py)"}},
        "metrics": {**manifest.metrics, "rating_head": {
            "ratings": rated, "users": int(sum(np.isfinite(r).any() for r in ratings)), "fit_seconds": seconds,
            "mean_rating": head.mu, "bounds": list(head.bounds)}},
        "parity": {**manifest.parity, "rating_head_served_vs_offline_max_abs": _parity(
            head, served, trunk, contexts, histories, ratings, data)},
        "extra_files": {**manifest.extra_files, "rating_head": RATING_HEAD_FILE},
    })


def _parity(head, served: ServedRatingHead, trunk: BundleTrunk, contexts, histories, ratings, data) -> float:
    """The id-keyed head as the ranking tier reads it from the file against the fitted one, on the first
    users' whole-history contexts and the first items."""
    users = [u for u, h in enumerate(histories) if len(h)][:PARITY_USERS]
    if not users:
        return 0.0
    items = np.arange(min(PARITY_ITEMS, len(trunk.item_vectors)))
    ids = [data.item_ids[i] for i in items]
    worst = 0.0
    for u in users:
        context = contexts[u][len(histories[u])]
        offline = head.predict(context[None], head.offsets([histories[u]], [ratings[u]]),
                               trunk.item_vectors)[0, items]
        rated = np.isfinite(ratings[u])
        offset = served.offset({data.item_ids[i]: float(r) for i, r in zip(histories[u][rated], ratings[u][rated])})
        got = served.predict(context, offset, trunk.item_vectors[items], ids)
        worst = max(worst, float(np.abs(got - offline).max()))
    return worst
