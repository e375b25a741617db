"""Typed settings of the ranking worker; a wrong value stops the process at start, naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lmrec.service_settings import RANKING_PORT, ServingSettings, metrics_port_field, port_field


class RankingSettings(ServingSettings, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LMREC_RANKING_", extra="forbid")

    port: int = port_field(RANKING_PORT)
    bundle_dir: Path = Path("artifacts/minilm-zeroshot")
    state_dir: Path = Path("var/ranking")
    # auto: fp16 on CUDA, int8 on CPU.
    precision: Literal["auto", "fp32", "int8", "fp16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Item texts are encoded once (upsert, or re-encode after a swap) and their vectors serve for the
    # model's life, off the request path: fp32 keeps INT8's error out of them (-6% NDCG@10 when every
    # item is INT8-encoded, docs/benchmarks.md); "serving" uses `precision` for items too.
    item_precision: Literal["fp32", "serving"] = Field(
        "fp32", description="fp32 (default) or serving: the encoder precision for item texts")
    intra_op_threads: int = Field(0, ge=0, description="0 lets ONNX Runtime pick")
    inter_op_threads: int = Field(1, ge=0)
    max_batch_texts: int = Field(64, ge=1, le=4096)
    max_wait_ms: float = Field(2.0, ge=0, le=1000)
    max_queue: int = Field(2048, ge=1)
    warmup: bool = True
    # Negatives (dismissed or low-rated items): a candidate z standard deviations closer to one than the
    # average candidate loses penalty·z·strength standard deviations of score (ranking_service/ranker.py).
    # 0.25: on ML-100K no significant NDCG@10 cost up to 0.5, unlike 1.0 (docs/tuning.md#negative-penalty).
    negative_penalty: float = Field(0.25, ge=0, le=100)
    # Share of a trained ranker's user vector taken from the event-weighted mean of the history's item
    # vectors, so a purchase counts more than a view; it costs nothing where every event weighs the same
    # (ML-100K; docs/tuning.md#event-weight-blend).
    event_weight_blend: float = Field(0.1, ge=0, le=1)
    # Reasons: the most recent history items the leave-one-out attribution tries (each costs one more
    # history through the context graph per Rank call; docs/evaluation.md measures what it misses).
    explain_window: int = Field(20, ge=1, le=5000)
    # How often to look for a new bundle in bundle_dir (hot swap; SIGHUP checks at once); 0 = never.
    reload_interval_s: float = Field(5.0, ge=0, description="seconds between checks for a new bundle (0 = off)")
    # Prometheus exposition at http://host:metrics_port/metrics (README "Observability").
    metrics_port: int = metrics_port_field(9092)
