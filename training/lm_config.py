"""The LM recommender's configuration (training/lm_recommender.py), apart from it so that code reading only
the settings (the evaluation harness's LM defaults) need not import the recommender."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from training.lm_finetune import FinetuneConfig


@dataclass(frozen=True)
class LMRecConfig:
    model: str | None = None  # HF folder or name; None = bundled all-MiniLM-L6-v2
    max_length: int = 64
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    dim: int = 64
    layers: int = 2
    heads: int = 1
    dropout: float = 0.2
    max_len: int = 50
    lr: float = 2e-3
    batch_size: int = 128
    # A higher cap found only a plateau on ML-100K validation, at ~3.2 s an epoch (docs/tuning.md#max-epochs).
    max_epochs: int = 100
    eval_every: int = 2
    # Checks (every eval_every epochs) without a new best before stopping: the validation curve can
    # plateau for ~10 epochs before rising again (docs/tuning.md#patience).
    patience: int = 8
    # Early stopping compares the mean of this many consecutive checks (training/sequences.EarlyStopping),
    # so one lucky check on a noisy plateau does not pick the epoch count (docs/tuning.md#smooth-checks).
    smooth_checks: int = 3
    # Per-step decay of the weight average that validation and the exported model use (0 = off;
    # training/sequences.WeightAverage): it smooths a jumpy validation plateau (docs/tuning.md#weight-average).
    weight_average: float = 0.99
    # Share of items whose id embedding is dropped at each step, so the text path learns to rank alone.
    # 0.3: a stronger text-only path than 0.1 for no measurable loss; 0.6 lost (docs/tuning.md#id-dropout).
    id_dropout: float = 0.3
    # Cosine logits over unit vectors, or raw dot products as in SASRec: raw, since unit vectors fell far
    # below SASRec on ML-100K validation (docs/tuning.md#unit-logits).
    unit: bool = False
    # Weight of the free-text request against the history (both unit vectors): an explicit request
    # states intent better than past behaviour, so it dominates; the history breaks its ties.
    query_weight: float = 3.0
    # The text-only item bias (training/cold_calibration.py) is calibrated on this share of the trained
    # items, held out of the validation fit (0: no hold-out, no bias). The bias aims at cold HR@10 of at
    # least cold_target_ratio x warm HR@10, spending at most cold_max_ndcg_loss (relative) of validation
    # NDCG@10 on it: on ML-100K meeting the ratio costs ~40% of NDCG@10, so by default it is not met.
    cold_holdout: float = 0.1
    cold_target_ratio: float = 0.5
    cold_max_ndcg_loss: float = 0.02
    threads: int = 1
    # On data whose interactions name a scenario (surface, domain), one shared user tower is read per
    # scenario through a ScenarioGate (training/lm_model.py) and each target is ranked among its own
    # scenario's items; False trains scenario-blind (the comparison row). A share scenario_dropout of
    # the targets trains the gate's "no scenario" row too, so a request without one still gets a
    # whole-catalogue interest.
    scenarios: bool = True
    scenario_dropout: float = 0.1
    # Precisions whose whole-catalogue ranking is checked against FP32 at export (FP16 runs emulated,
    # slowly, on a CPU-only machine).
    parity_precisions: tuple[str, ...] = ("fp32", "int8", "fp16")
    seed: int = 0

    @classmethod
    def tiny(cls, seed: int = 0) -> LMRecConfig:
        """Seconds, not minutes: CI and smoke tests."""
        return cls(finetune=FinetuneConfig(steps=2, batch_pairs=8, seed=seed), dim=16, layers=1, heads=1,
                   max_len=20, max_epochs=2, eval_every=1, weight_average=0.0, parity_precisions=("fp32", "int8"),
                   seed=seed)

    @classmethod
    def from_options(cls, tiny: bool, seed: int, lm: str | None = None, finetune_steps: int | None = None,
                     dim: int | None = None) -> LMRecConfig:
        """The default (or tiny) configuration with the overrides the CLIs offer."""
        config = cls.tiny(seed) if tiny else cls(seed=seed)
        if lm:
            config = replace(config, model=lm)
        if finetune_steps is not None:
            config = replace(config, finetune=replace(config.finetune, steps=finetune_steps))
        if dim:
            config = replace(config, dim=dim)
        return config

    def as_dict(self) -> dict:
        return asdict(self)
