"""Full-catalogue scores of a fitted LM recommender: from the PyTorch model (the reference) and through its
exported bundle with the serving code (what `lmrec serve` ranks with).

Both the harness (training/lm_recommender.py) and the export's parity checks (training/lm_bundle.py) read
them, so they live apart from both.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from lmrec.bundle import Bundle
from training.lm_model import LMSeqNet
from training.split import Phase, SplitData


class FittedLM(Protocol):
    """What scoring reads of a fitted model (training.lm_recommender.TrainedLM)."""

    net: LMSeqNet
    known: np.ndarray  # bool [n_items]: items with an id embedding
    cold_bias: float


@torch.no_grad()
def torch_scores(trained: FittedLM, histories: list[np.ndarray], scenarios: np.ndarray | None = None) -> np.ndarray:
    """Full-catalogue scores from the PyTorch model (the reference the ONNX exports are checked against);
    `scenarios` (per history, 0 = none) for a scenario-aware net."""
    net = trained.net.eval()
    scores = net.context_scores(histories, net.item_vectors(), scenarios=scenarios)
    if trained.cold_bias:
        scores += np.float32(trained.cold_bias) * (~trained.known).astype(np.float32)[None]
    return scores


class BundleScorer:
    """Scores users offline with the serving code: the bundle's ONNX graphs via SequenceRanker.

    The runtime is pinned to the CPU provider and the asked precision (the serving `choose_runtime` would
    turn FP16 on a CPU into INT8, and parity must measure FP16 itself). `reencode` ignores the bundle's
    training-time text vectors, so every item text goes through this precision's encoder, as items
    upserted after training do. The ranker runs with the serving defaults (RankerOptions), so scores are
    the served ones; `graphs_only` drops the serving-time adjustments (the export parity compares the
    graphs with PyTorch).
    """

    def __init__(self, bundle_dir: Path, precision: str, data: SplitData, phase: Phase,
                 reencode: bool = False, graphs_only: bool = False) -> None:
        from ranking_service.item_store import ItemStore
        from ranking_service.model import LoadedModel
        from ranking_service.onnx_session import RuntimeChoice
        from ranking_service.ranker import RankerOptions
        from ranking_service.seq_ranker import SequenceRanker
        from ranking_service.text_encoder import TextEncoder

        bundle = Bundle.load(bundle_dir)
        manifest = bundle.manifest
        runtime = RuntimeChoice(precision, ["CPUExecutionProvider"])
        self._tmp = tempfile.TemporaryDirectory(prefix="lmrec-score-")
        store = ItemStore(Path(self._tmp.name) / "items.sqlite", manifest.served_dimension, manifest.model_version)
        self.ranker = SequenceRanker(bundle, store, runtime,
                                     RankerOptions.graphs_only() if graphs_only else RankerOptions())
        model = LoadedModel(manifest, runtime, TextEncoder(bundle, runtime, 1, 1), self.ranker, store,
                            None if reencode else bundle.trained_texts())
        self.items = np.concatenate([model.encode_items(data.item_ids[start:start + 256],
                                                        data.item_texts[start:start + 256])
                                     for start in range(0, data.n_items, 256)])
        store.put(data.item_ids, data.item_texts, self.items)
        self._data, self._history = data, data.history_sequences(phase)

    def score(self, user_idx: np.ndarray, scenarios: np.ndarray | None = None) -> np.ndarray:
        """`scenarios`: per user, the scenario id (as SplitData.item_scenario_ids; 0 = none) asked for."""
        from ranking_service.ranker import RankContext

        names = ["", *self._data.scenario_names]
        out = np.zeros((len(user_idx), self._data.n_items), dtype=np.float32)
        for row, u in enumerate(user_idx):
            ids = [self._data.item_ids[i] for i in self._history[u]]
            scenario = names[scenarios[row]] if scenarios is not None else ""
            ctx = self.ranker.context_vector(RankContext(self._data.user_ids[u], ids, scenario=scenario), None)
            if ctx is not None:
                out[row] = self.items @ ctx
        return out
