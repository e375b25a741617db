"""Everything one loaded bundle needs to serve: encoder, ranker, item store. Built from a bundle."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lmrec.bundle import Bundle, Manifest, TrainedTexts
from ranking_service.item_store import ItemStore
from ranking_service.onnx_session import RuntimeChoice, choose_runtime
from ranking_service.ranker import Ranker, RankerOptions
from ranking_service.ranker_kinds import build_ranker
from ranking_service.settings import RankingSettings
from ranking_service.text_encoder import TextEncoder

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    manifest: Manifest
    runtime: RuntimeChoice
    encoder: TextEncoder  # free-text queries, on the request path
    ranker: Ranker
    store: ItemStore
    trained_texts: TrainedTexts | None = None
    item_encoder: TextEncoder | None = None  # item texts, when not `encoder` (RankingSettings.item_precision)

    @property
    def item_text_encoder(self) -> TextEncoder:
        return self.item_encoder or self.encoder

    def known_text_vectors(self, item_ids: list[str], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Training-time text vectors of unchanged catalogue items: (vectors, hit mask); misses need encoding."""
        if self.trained_texts is None:
            return np.zeros((len(texts), self.encoder.dimension), dtype=np.float32), np.zeros(len(texts), dtype=bool)
        return self.trained_texts.lookup(item_ids, texts)

    def encode_items(self, item_ids: list[str], texts: list[str]) -> np.ndarray:
        """Served item vectors: the LM text vectors plus what the ranker learnt about known ids."""
        vectors, hit = self.known_text_vectors(item_ids, texts)
        if not hit.all():
            vectors[~hit] = self.item_text_encoder.encode([t for t, h in zip(texts, hit) if not h])
        return self.ranker.item_vectors(vectors, item_ids)


def load_model(settings: RankingSettings) -> LoadedModel:
    """Loads and checks the bundle, builds the ranker, reloads (and if needed re-encodes) item vectors."""
    bundle = Bundle.load(settings.bundle_dir)
    manifest = bundle.manifest
    runtime = choose_runtime(settings.device, settings.precision)
    encoder = TextEncoder(bundle, runtime, settings.intra_op_threads, settings.inter_op_threads)
    item_encoder = None
    if settings.item_precision == "fp32" and runtime.precision != "fp32":
        item_encoder = TextEncoder(bundle, replace(runtime, precision="fp32"), settings.intra_op_threads,
                                   settings.inter_op_threads)
    store = ItemStore(Path(settings.state_dir) / "item_repr.sqlite", manifest.served_dimension, manifest.model_version)
    ranker = build_ranker(bundle, store, runtime, RankerOptions(
        negative_penalty=settings.negative_penalty, event_weight_blend=settings.event_weight_blend,
        explain_window=settings.explain_window,
        intra_op_threads=settings.intra_op_threads or 1))
    model = LoadedModel(manifest, runtime, encoder, ranker, store, bundle.trained_texts(), item_encoder)
    reencoded = store.load(model.encode_items)
    log.info("bundle %s (%s, queries %s, items %s, on %s): %d items known, %d re-encoded", manifest.model_version,
             manifest.ranker_kind, runtime.precision, model.item_text_encoder.precision, runtime.providers[0],
             len(store), reencoded)
    if settings.warmup:
        for warm in {id(e): e for e in (encoder, model.item_text_encoder)}.values():
            warm.warm_up(settings.max_batch_texts)
    return model
