"""Typed settings of the retrieval service: flags over `LMREC_RETRIEVAL_*` environment over defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lmrec.service_settings import RETRIEVAL_PORT, ServingSettings, metrics_port_field, port_field


class RetrievalSettings(ServingSettings, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LMREC_RETRIEVAL_", extra="forbid")

    port: int = port_field(RETRIEVAL_PORT)
    # Prometheus exposition at http://host:metrics_port/metrics (README "Observability"). `lmrec serve` puts
    # shard i on 9093 + 10 i, like its gRPC port.
    metrics_port: int = metrics_port_field(9093)
    dimension: int = Field(384, ge=1, le=16384)
    data_dir: Path = Path("var/retrieval")
    shard_index: int = Field(0, ge=0)
    shard_count: int = Field(1, ge=1, le=4096)

    ef_default: int = Field(128, ge=1)
    ef_min: int = Field(16, ge=1)
    ef_max: int = Field(2048, ge=1)
    m: int = Field(16, ge=2, le=128)
    ef_construction: int = Field(200, ge=8)
    initial_capacity: int = Field(10_000, ge=16)
    # Below this many eligible items a brute-force scan is both exact and cheaper than a filtered graph walk.
    # Without an exact-scan copy each scanned row is fetched from hnswlib (~20 us), hence a low default.
    exact_scan_threshold: int = Field(500, ge=0)
    # A filtered graph walk costs ~ this * ef / selectivity rows of exact scan; above the threshold a
    # restricted search still scans exactly when that is cheaper. 0 disables the rule.
    walk_cost_per_ef: float = Field(24.0, ge=0.0)
    # "none": exact scans fetch rows from hnswlib and the index stays under 2 GB per 1M 384-d items; a
    # float16 (scores within ~1e-3) or float32 copy makes large exact scans fast for 768 / 1536 bytes an item.
    exact_scan_dtype: Literal["none", "float16", "float32"] = "none"
    # Items that per-value filter graphs may hold, as a share of the live items (0 turns them off): a
    # filter on a value bigger than exact_scan_threshold and within this budget gets its own HNSW graph,
    # built in the background on first use, at ~1.8 kB per item in it.
    filter_graph_share: float = Field(0.1, ge=0.0, le=10.0)
    # hnswlib M of those graphs (None: m). Higher M buys a little filtered recall per millisecond at
    # twice the cost per request at the same ef (VectorIndex's docstring has the figures).
    filter_graph_m: int | None = Field(None, ge=2, le=128)
    tombstone_rebuild_ratio: float = Field(0.2, gt=0.0, le=1.0)
    snapshot_every: int = Field(10_000, ge=1)

    # Threads serving searches (hnswlib releases the GIL while walking the graph).
    search_threads: int = Field(4, ge=1, le=256)
    # Threads hnswlib uses to insert a batch; background rebuilds use one so they do not starve searches.
    build_threads: int = Field(2, ge=1, le=256)

    @model_validator(mode="after")
    def _consistent(self) -> RetrievalSettings:
        if self.shard_index >= self.shard_count:
            raise ValueError(f"shard_index {self.shard_index} must be below shard_count {self.shard_count}")
        if not self.ef_min <= self.ef_default <= self.ef_max:
            raise ValueError(f"need ef_min <= ef_default <= ef_max, got {self.ef_min}, {self.ef_default}, {self.ef_max}")
        return self
