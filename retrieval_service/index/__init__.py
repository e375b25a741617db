"""Cosine-similarity vector index over hnswlib with string ids, multi-valued attributes and planned filtering.

One module per job: `writes` (upserts and deletes onto a graph), `rebuild` (compaction with the writes made
meanwhile replayed), `filter_graphs` (per-value graphs built in the background), `planner` (which search plan,
pure) and `search` (running it), `snapshot` (save and load); `vector_index` is the public face over them.
"""

from retrieval_service.index.config import IndexConfig
from retrieval_service.index.graph import COPY_CHUNK as _COPY_CHUNK  # bench/reshard_bench.py reports it
from retrieval_service.index.graph import METRIC, Attributes, normalize
from retrieval_service.index.search import SearchResult
from retrieval_service.index.snapshot import SnapshotMismatch
from retrieval_service.index.vector_index import IndexStats, VectorIndex

__all__ = [
    "METRIC",
    "Attributes",
    "IndexConfig",
    "IndexStats",
    "SearchResult",
    "SnapshotMismatch",
    "VectorIndex",
    "normalize",
    "_COPY_CHUNK",
]
