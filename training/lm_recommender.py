"""The LM recommender: fine-tuned text encoder + ID-aware sequence model, as one harness `Recommender`.

Training runs in two stages (docs/evaluation.md explains why):
  1. the LM is fine-tuned on co-occurrence in the histories (training/lm_finetune.py) and embeds every
     item text once;
  2. a causal transformer over item vectors built from those embeddings plus ID embeddings learns
     next-item prediction with full-softmax cross-entropy (training/lm_model.py). ID embeddings are
     dropped for a random share of items at every step, so the text path alone ranks items well: that
     is what cold and newly upserted items get.
Validation fits stop early on validation NDCG@10; test fits retrain for the chosen number of epochs.

Scoring in the test phase goes through the exported bundle on ONNX Runtime with the serving code
(ranking_service.seq_ranker), so the harness measures exactly what `lmrec serve` ranks with; the
`precision` picks the INT8 (CPU serving default) or FP32 graph.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from training.cold_calibration import calibrate_cold_bias, calibration_holdout
from training.lm_config import LMRecConfig
from training.lm_finetune import embed_texts, finetune_encoder
from training.lm_model import LMSeqNet
from training.lm_scores import BundleScorer, torch_scores
from training.metrics import phase_ndcg10
from training.protocols import ModelEntry, Recommender
from training.replica import current
from training.sequences import PAD, fit_next_item, torch_threads, training_windows
from training.split import Phase, SplitData

log = logging.getLogger(__name__)


@dataclass
class FineTunedLM:
    pooled: torch.nn.Module
    tokenizer: object
    source: str
    text: np.ndarray  # [n_items, T] unit embeddings of data.item_texts
    stats: dict


@dataclass
class TrainedLM:
    config: LMRecConfig
    lm: FineTunedLM
    net: LMSeqNet
    phase: Phase
    known: np.ndarray  # bool [n_items]: items with an id embedding
    epochs: int
    curve: list[tuple[int, float]]
    seconds: dict
    # Score bias of text-only items, calibrated on the validation fit and carried to the test fit.
    cold_bias: float = 0.0
    cold_calibration: dict = field(default_factory=dict)
    # What the sequence model was fitted on: the split, less the calibration hold-out in validation fits.
    fit_data: SplitData | None = None
    holdout: np.ndarray | None = None


_LM_CACHE: dict[tuple, FineTunedLM] = {}
_FIT_CACHE: dict[tuple, TrainedLM] = {}
_BUNDLE_CACHE: dict[int, Path] = {}
# Bundles exported only to be scored (no bundle_root given) live here; the directory's finalizer removes
# it when the process exits, so repeated evaluations don't leave ~275 MB each in the temp dir.
_SCRATCH: tempfile.TemporaryDirectory | None = None


def fine_tuned_lm(data: SplitData, config: LMRecConfig) -> FineTunedLM:
    """Stage 1, once per (data, LM config): fine-tuned on the test-phase history (never a test item).

    Both fits share it; the validation fit's early stopping therefore sees an LM that has seen the
    validation items as co-occurrences, which can only flatter the validation curve, not the test.
    """
    key = (data.fingerprint, data.config, config.model, config.max_length, config.finetune)
    if key not in _LM_CACHE:
        from training.export_encoder import load_pooled_encoder

        pooled, tokenizer, source = load_pooled_encoder(config.model)
        stats = finetune_encoder(pooled, tokenizer, data.item_texts, data.history_sequences("test"), config.finetune)
        text = embed_texts(pooled, tokenizer, data.item_texts, config.max_length, threads=config.finetune.threads)
        _LM_CACHE[key] = FineTunedLM(pooled, tokenizer, source, text, stats)
    return _LM_CACHE[key]


def train(data: SplitData, phase: Phase, config: LMRecConfig, fixed_epochs: int | None = None,
          lm: FineTunedLM | None = None) -> TrainedLM:
    """Fits the sequence model on `data`'s `phase` history over a fine-tuned LM: `lm` when given (a
    production run fine-tunes once, on every interaction, and fits both phases over it), else the one
    fine-tuned on `data` (cached)."""
    key = (data.fingerprint, data.config, phase, config, fixed_epochs, id(lm) if lm is not None else None)
    if key not in _FIT_CACHE:
        started = time.perf_counter()
        if lm is not None and len(lm.text) != data.n_items:
            raise ValueError(f"the given LM embeds {len(lm.text)} items, the data has {data.n_items}")
        lm = lm or fine_tuned_lm(data, config)
        lm_seconds = time.perf_counter() - started
        fit_data, holdout = data, None
        if phase == "validation" and config.cold_holdout > 0:
            holdout = calibration_holdout(data.item_popularity(phase) > 0, config.cold_holdout, config.seed)
            fit_data = data.without_items(holdout, f"calibration-holdout-{config.cold_holdout}-{config.seed}")
        with torch_threads(config.threads):
            trained = _fit_sequence_model(fit_data, phase, config, lm, fixed_epochs)
        trained.fit_data, trained.holdout = fit_data, holdout
        trained.seconds = {"lm": round(lm_seconds, 1), "sequence": round(time.perf_counter() - started - lm_seconds, 1)}
        _FIT_CACHE[key] = trained
    return _FIT_CACHE[key]


def _fit_sequence_model(data: SplitData, phase: Phase, config: LMRecConfig, lm: FineTunedLM,
                        fixed_epochs: int | None) -> TrainedLM:
    torch.manual_seed(config.seed)
    device = current().device
    rng = np.random.default_rng(current().seed(config.seed))
    history = data.history_sequences(phase)
    known = data.item_popularity(phase) > 0
    scenario_of = torch.from_numpy(data.item_scenario_ids()).to(device) if uses_scenarios(data, config) else None
    net = _sequence_net(data, config, lm.text, known)
    windows = training_windows(history, config.max_len + 1, True)
    early_stop = phase == "validation" and fixed_epochs is None
    epochs = fixed_epochs or config.max_epochs
    users = data.eval_users("validation") if early_stop else None
    trained = TrainedLM(config, lm, net, phase, known, epochs, [], {})

    def loss_fn(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        keep_ids = (torch.rand(data.n_items, device=device) >= config.id_dropout).to(torch.float32)
        items = net.item_vectors(keep_ids)
        hidden = net.hidden(inputs, items)
        real = targets != PAD
        target = targets[real] - 1
        if scenario_of is None:
            return F.cross_entropy(net.logits(hidden[real], items), target)
        scenario = scenario_of[target]
        scenario = torch.where(torch.rand(len(scenario), device=device) < config.scenario_dropout, 0, scenario)
        logits = net.logits(net.gate(hidden[real], scenario), items)
        elsewhere = (scenario_of[None, :] != scenario[:, None]) & (scenario[:, None] > 0)
        return F.cross_entropy(logits.masked_fill(elsewhere, -1e9), target)

    trained.curve, best_epoch = fit_next_item(
        net, windows, lr=config.lr, batch_size=config.batch_size, epochs=epochs, rng=rng, loss_fn=loss_fn,
        validate=(lambda: _validation_ndcg(trained, data, users)) if early_stop else None,
        eval_every=config.eval_every, patience=config.patience, smooth=config.smooth_checks,
        weight_average=config.weight_average, desc=f"lmrec[{phase}]")
    trained.epochs = (best_epoch or epochs) if early_stop else epochs
    return trained


def uses_scenarios(data: SplitData, config: LMRecConfig) -> bool:
    return config.scenarios and bool(data.scenario_names)


def _sequence_net(data: SplitData, config: LMRecConfig, text: np.ndarray, known: np.ndarray) -> LMSeqNet:
    return LMSeqNet(torch.from_numpy(text), torch.from_numpy(known), config.dim, config.layers, config.heads,
                    config.dropout, config.max_len, config.unit,
                    n_scenarios=len(data.scenario_names) if uses_scenarios(data, config) else 0)


def trained_state(trained: TrainedLM) -> dict:
    """A fitted model as plain tensors, arrays and values (what a checkpoint holds; modules carry hooks
    that do not pickle): the fine-tuned LM's weights, the sequence net's, and what the export reads.
    The fitted split is left out; trained_from_state takes it back as an argument."""
    lm = trained.lm
    return {"lm": {"weights": lm.pooled.state_dict(), "source": lm.source, "text": lm.text, "stats": lm.stats},
            "net": trained.net.state_dict(), "phase": trained.phase, "known": trained.known,
            "epochs": trained.epochs, "curve": trained.curve, "seconds": trained.seconds,
            "cold_bias": trained.cold_bias, "cold_calibration": trained.cold_calibration}


def trained_from_state(state: dict, data: SplitData, config: LMRecConfig) -> TrainedLM:
    """The TrainedLM that trained_state saved, fitted on `data` with `config` (the pre-trained LM is
    loaded again and given the fine-tuned weights)."""
    from training.export_encoder import load_pooled_encoder

    pooled, tokenizer, _ = load_pooled_encoder(config.model)
    pooled.load_state_dict(state["lm"]["weights"])
    lm = FineTunedLM(pooled.eval(), tokenizer, state["lm"]["source"], state["lm"]["text"], state["lm"]["stats"])
    net = _sequence_net(data, config, lm.text, state["known"])
    net.load_state_dict(state["net"])
    return TrainedLM(config, lm, net.eval(), state["phase"], state["known"], state["epochs"], state["curve"],
                     state["seconds"], state["cold_bias"], state["cold_calibration"])


def _validation_ndcg(trained: TrainedLM, data: SplitData, users: np.ndarray) -> float:
    """A scenario-aware net is validated as it is evaluated: each target in its own scenario, ranked
    among that scenario's items."""
    history = data.history_sequences("validation")
    scenarios = None
    if trained.net.gate is not None:
        scenario_of = data.item_scenario_ids()
        scenarios = scenario_of[data.targets("validation")[users]]
    scores = torch_scores(trained, [history[u] for u in users], scenarios)
    if scenarios is not None:
        scores[scenario_of[None, :] != scenarios[:, None]] = -np.inf
    return float(phase_ndcg10(scores, data, "validation", users).mean())


class LMRecommender(Recommender):
    name = "lmrec"

    def __init__(self, config: LMRecConfig, precision: str = "int8", fixed_epochs: int | None = None,
                 bundle_root: Path | None = None, cold_bias: float | None = None,
                 lm: FineTunedLM | None = None) -> None:
        self.config, self.precision, self.fixed_epochs = config, precision, fixed_epochs
        self.lm = lm
        self.cold_bias = cold_bias
        self.bundle_root = bundle_root
        self.trained: TrainedLM | None = None
        self.bundle_dir: Path | None = None
        self._scorer = None

    def fit(self, data: SplitData, phase: Phase) -> None:
        self.trained = train(data, phase, self.config, self.fixed_epochs, self.lm)
        if phase == "validation":
            if not self.trained.cold_calibration:
                self.trained.cold_bias, self.trained.cold_calibration = (
                    calibrate_cold_bias(self.trained, self.config.cold_target_ratio, self.config.cold_max_ndcg_loss)
                    if self.trained.holdout is not None else (0.0, {"rule": "off (cold_holdout 0)"}))
            self._scorer = None  # validation is for choosing epochs: the PyTorch model is enough
            self._data = data
            return
        if self.cold_bias is not None:
            self.trained.cold_bias = self.cold_bias
        self.bundle_dir = exported_bundle(self.trained, data, self.bundle_root)
        self._scorer = BundleScorer(self.bundle_dir, self.precision, data, phase)

    def score(self, user_idx: np.ndarray, scenarios: np.ndarray | None = None) -> np.ndarray:
        """`scenarios`: per user, the scenario id asked for (SplitData.item_scenario_ids; 0 = none)."""
        if self._scorer is None:
            history = self._data.history_sequences(self.trained.phase)
            return torch_scores(self.trained, [history[u] for u in user_idx], scenarios)
        return self._scorer.score(user_idx, scenarios)

    def fitted_params(self) -> dict:
        if not self.trained:
            return {}
        return {"fixed_epochs": self.trained.epochs, "cold_bias": self.trained.cold_bias}


def exported_bundle(trained: TrainedLM, data: SplitData, root: Path | None) -> Path:
    """The bundle of a trained model, exported once (both precisions' harness rows share it)."""
    from training.lm_bundle import export_bundle

    key = id(trained)
    if key not in _BUNDLE_CACHE:
        if root is None:
            global _SCRATCH
            if _SCRATCH is None:
                _SCRATCH = tempfile.TemporaryDirectory(prefix="lmrec-bundle-")
            root = Path(tempfile.mkdtemp(dir=_SCRATCH.name))
        _BUNDLE_CACHE[key] = export_bundle(trained, data, Path(root) / f"lmrec-{data.dataset_name}-{trained.phase}")
    return _BUNDLE_CACHE[key]


# harness registration ---------------------------------------------------------------------------
def config_from_args(args: argparse.Namespace) -> LMRecConfig:
    options = getattr(args, "model_options", {}) or {}
    steps = options.get("finetune_steps")
    return LMRecConfig.from_options(args.quick, args.seed, options.get("lm"), int(steps) if steps else None)


class TrainedBundleRecommender(Recommender):
    """A bundle made by `lmrec train` on this very split (`--model-option bundle=DIR`), scored as is.

    `lmrec train` runs the same procedure the harness would (validation fit for the epoch count, refit
    on the test-phase history, export), so evaluating its bundle saves retraining; the manifest's data
    fingerprint and split parameters must match the harness's split, or the run stops.
    """

    name = "lmrec"

    def __init__(self, bundle_dir: Path, precision: str) -> None:
        self.bundle_dir, self.precision = Path(bundle_dir), precision
        self._scorer: BundleScorer | None = None

    def fit(self, data: SplitData, phase: Phase) -> None:
        from lmrec.bundle import load_manifest

        manifest = load_manifest(self.bundle_dir)
        hp = manifest.hyperparameters
        if phase != "test" or hp.get("fit_phase") != "test":
            raise ValueError(f"{self.bundle_dir}: a trained bundle can only be evaluated on the test phase")
        if hp.get("training_data", "holdout") != "holdout":
            raise ValueError(f"{self.bundle_dir} is a production bundle trained on every interaction, test "
                             "targets included; build an evaluation bundle with `lmrec train --holdout`")
        if manifest.data_fingerprint != data.fingerprint or hp.get("split") != data.config.as_dict():
            raise ValueError(f"{self.bundle_dir} was trained on other data or another split "
                             f"({manifest.data_fingerprint}, {hp.get('split')}); retrain or drop the bundle option")
        self._scorer = BundleScorer(self.bundle_dir, self.precision, data, phase)

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return self._scorer.score(user_idx)


def _factory(precision: str):
    def build(args: argparse.Namespace, **params) -> Recommender:
        options = getattr(args, "model_options", {}) or {}
        if options.get("bundle"):
            return TrainedBundleRecommender(Path(options["bundle"]), precision)
        return LMRecommender(config_from_args(args), precision=precision, fixed_epochs=params.get("fixed_epochs"),
                             cold_bias=params.get("cold_bias"),
                             bundle_root=Path(options["bundle_root"]) if options.get("bundle_root") else None)

    return build


def _grid(args: argparse.Namespace) -> list[dict]:
    # One validation fit chooses the epoch count (early stopping); nothing else is grid-searched because
    # one fit costs minutes here. A pre-trained bundle was tuned the same way by `lmrec train`.
    return [] if (getattr(args, "model_options", {}) or {}).get("bundle") else [{}]


def model_entries() -> dict[str, ModelEntry]:
    """The harness's "lmrec" and "lmrec-fp32" (training/registry.py); the FP32 row reuses the INT8 row's
    training run and bundle."""
    return {"lmrec": ModelEntry(_factory("int8"), grid_from_args=_grid),
            "lmrec-fp32": ModelEntry(_factory("fp32"), grid_from_args=_grid)}
