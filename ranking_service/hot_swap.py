"""Hot swap of the served bundle: load, warm up, switch, then release the old one; no request dropped.

A ranking worker watches its bundle directory (`lmrec train --out` replaces it atomically). When the
manifest names another model version, the new bundle is loaded beside the serving one: its ONNX sessions
are created and warmed up and every stored item is encoded with it (into its own rows of the item
store) while the old model keeps answering. Then one assignment switches what new calls see; calls
already running finish on the model they started with; the old batcher drains its queue before it
closes, writes that reached the old model meanwhile are encoded for the new one, and the old rows go.

A bundle whose served vectors have another length than the retrieval index was built for is refused
(logged, the old model keeps serving): such a change needs the index rebuilt, i.e. a restart.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from lmrec.bundle import peek_model_version
from ranking_service.batcher import MicroBatcher
from ranking_service.model import LoadedModel, load_model
from ranking_service.settings import RankingSettings

log = logging.getLogger(__name__)
DRAIN_TIMEOUT_S = 30.0


class QueryCache:
    """The last few query embeddings of one model (LRU); a swap starts a new one with the new model."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._entries: OrderedDict[str, object] = OrderedDict()

    def get(self, query: str):
        value = self._entries.get(query)
        if value is not None:
            self._entries.move_to_end(query)
        return value

    def put(self, query: str, value) -> None:
        self._entries[query] = value
        self._entries.move_to_end(query)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)


@dataclass(frozen=True)
class Serving:
    """A model and the batcher that feeds its encoder: always swapped together."""

    model: LoadedModel
    batcher: MicroBatcher
    query_cache: QueryCache = field(default_factory=QueryCache)


class ServingHolder:
    """What a call should use right now; read once per call so a call never mixes two models."""

    def __init__(self, serving: Serving) -> None:
        self.current = serving
        self.swaps = 0


class BundleSwapper:
    """Swaps `holder` to the bundle on disk when its manifest names a new, acceptable model version.

    `keep_previous_rows`: whether the item store keeps the rows of the model swapped out (dropping those
    of older ones). A single worker drops them; Ray Serve replicas share one store and swap one after
    another, so a replica still serving the previous model must keep finding its rows.
    `on_swapped(model)` runs right after the switch (a Ray replica re-points its store follower there).
    """

    def __init__(self, settings: RankingSettings, holder: ServingHolder,
                 make_batcher: Callable[[LoadedModel], MicroBatcher], keep_previous_rows: bool = False,
                 on_swapped: Callable[[LoadedModel], None] | None = None) -> None:
        self._settings = settings
        self._holder = holder
        self._make_batcher = make_batcher
        self._keep_previous_rows = keep_previous_rows
        self._on_swapped = on_swapped
        self._refused: set[str] = set()

    async def swap_if_new(self) -> bool:
        """Swaps to the bundle on disk if it is a new, acceptable version; returns whether it swapped."""
        old = self._holder.current
        version = peek_model_version(self._settings.bundle_dir)
        if version is None or version == old.model.manifest.model_version or version in self._refused:
            return False
        log.info("bundle %s found in %s; loading it beside %s", version, self._settings.bundle_dir,
                 old.model.manifest.model_version)
        try:
            new = await asyncio.to_thread(load_model, self._settings)
        except Exception as exc:  # noqa: BLE001 - a bad bundle must never take the serving one down
            log.error("hot swap to %s refused: %s", version, exc)
            self._refused.add(version)
            return False
        if new.manifest.served_dimension != old.model.manifest.served_dimension:
            log.error("hot swap to %s refused: it serves %d-d vectors, the retrieval index holds %d-d; "
                      "restart the system to rebuild the index", version, new.manifest.served_dimension,
                      old.model.manifest.served_dimension)
            new.store.close()
            self._refused.add(new.manifest.model_version)
            return False
        batcher = self._make_batcher(new)
        batcher.start()
        self._holder.current = Serving(new, batcher)
        self._holder.swaps += 1
        if self._on_swapped is not None:
            self._on_swapped(new)
        await old.batcher.drain(DRAIN_TIMEOUT_S)
        await old.batcher.close()
        caught_up = await asyncio.to_thread(new.store.reconcile, new.encode_items)
        keep = {old.model.manifest.model_version} if self._keep_previous_rows else set()
        pruned = await asyncio.to_thread(new.store.prune, keep)
        old.model.store.close()
        log.info("hot-swapped %s -> %s (%d items caught up, %d old rows dropped)",
                 old.model.manifest.model_version, new.manifest.model_version, caught_up, pruned)
        return True


async def run_periodically(check: Callable[[], Awaitable[object]], interval_s: float) -> None:
    """Awaits `check()` every `interval_s` seconds and at once on SIGHUP, until cancelled."""
    wake = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, wake.set)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        pass
    while True:
        try:
            await asyncio.wait_for(wake.wait(), timeout=interval_s)
        except asyncio.TimeoutError:
            pass
        wake.clear()
        await check()
