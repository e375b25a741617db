"""What every job of the index reads: its dimension and knobs, the graph searches see now, and its lock."""

from __future__ import annotations

from dataclasses import dataclass, field

from retrieval_service.index.config import IndexConfig
from retrieval_service.index.graph import Graph, new_graph
from retrieval_service.locks import ReadersWriterLock


@dataclass
class SharedIndex:
    """Searches hold `lock` to read, writes hold it exclusively; a rebuild or a load swaps `graph` under it.

    Jobs read `config` each time they need a knob: retuning replaces the whole (frozen) object.
    """

    dimension: int
    config: IndexConfig
    graph: Graph = field(init=False)
    lock: ReadersWriterLock = field(default_factory=ReadersWriterLock)

    def __post_init__(self) -> None:
        self.graph = new_graph(self.dimension, self.config, self.config.initial_capacity)
