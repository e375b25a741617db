"""The fits behind a bundle (training/train.py's docstring tells the procedure), shared by `lmrec train`
in one process and by each Ray Train worker of `lmrec train --ray` (training/distributed.py)."""

from __future__ import annotations

from training.lm_config import LMRecConfig
from training.lm_recommender import LMRecommender, TrainedLM, fine_tuned_lm, train
from training.split import SplitData


def fit_bundle_model(data: SplitData, final: SplitData, config: LMRecConfig, epochs: int | None,
                     holdout: bool) -> tuple[TrainedLM, int, dict]:
    """The fits behind a bundle (the module docstring's procedure), in this process or in each Ray Train
    worker (training/distributed.py). Returns the model fitted on `final`, its epoch count, and what the
    validation fit chose ({} when `epochs` was given)."""
    # A production run fine-tunes the LM once, on every interaction, and fits both phases over it: the
    # validation fit's LM then knows its targets' co-occurrences, as an evaluation run's LM always has
    # (training/lm_recommender.py:fine_tuned_lm), which can flatter the epoch choice, not the served model.
    lm = None if holdout else fine_tuned_lm(final, config)
    validation = {}
    if epochs is None:
        probe = LMRecommender(config, lm=lm)
        probe.fit(data, "validation")
        epochs = probe.trained.epochs
        validation = {"curve": probe.trained.curve, "best_epoch": epochs,
                      "cold_bias": probe.trained.cold_bias, "cold_calibration": probe.trained.cold_calibration}
    trained = train(final, "test", config, epochs, lm)
    trained.curve = validation.get("curve", [])
    trained.cold_bias = validation.get("cold_bias", 0.0)
    trained.cold_calibration = validation.get("cold_calibration", {"rule": "not calibrated (--epochs given)"})
    return trained, epochs, validation
