"""The ranker kinds this worker serves, by a bundle manifest's `ranker_kind`."""

from __future__ import annotations

from collections.abc import Callable

from lmrec.bundle import Bundle
from lmrec.errors import ArtifactMismatch
from ranking_service.item_store import ItemStore
from ranking_service.onnx_session import RuntimeChoice
from ranking_service.ranker import Ranker, RankerOptions, ZeroShotRanker
from ranking_service.seq_ranker import SequenceRanker

RankerBuilder = Callable[[Bundle, ItemStore, RuntimeChoice, RankerOptions], Ranker]
RANKERS: dict[str, RankerBuilder] = {
    ZeroShotRanker.kind: lambda bundle, store, runtime, options: ZeroShotRanker(bundle.manifest, store, options),
    SequenceRanker.kind: SequenceRanker,
}


def build_ranker(bundle: Bundle, store: ItemStore, runtime: RuntimeChoice, options: RankerOptions | None = None
                 ) -> Ranker:
    manifest = bundle.manifest
    builder = RANKERS.get(manifest.ranker_kind)
    if builder is None:
        raise ArtifactMismatch(
            f"bundle {manifest.model_version} needs ranker kind '{manifest.ranker_kind}'; "
            f"this ranking worker knows {sorted(RANKERS)}"
        )
    return builder(bundle, store, runtime, options or RankerOptions())
