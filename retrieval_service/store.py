"""Durability of the index: write-ahead log, snapshots, and recovery on start.

Layout of `data_dir`:
    CURRENT          generation number of the live snapshot (replaced atomically)
    snapshot-<gen>/  graph.hnsw, slots.npz, meta.json, filter-<n>.hnsw per value graph (absent for generation 0)
    wal-<gen>.log    writes acknowledged after that snapshot
    placement.json   which items this shard owns (retrieval_service/placement.py)

A snapshot is written into `snapshot-<gen>.tmp`, fsynced, renamed, and only then does CURRENT move
to it; the previous snapshot and log are deleted afterwards. A crash at any point leaves either the
old pair or the new pair intact.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from lmrec.sharding import MODULO, Placement
from retrieval_service import placement as shard_placement
from lmrec.filters import AttributeFilter
from retrieval_service.index import Attributes, IndexStats, SearchResult, VectorIndex
from retrieval_service.placement import ShardPlacement
from retrieval_service.wal import UPSERT, WriteAheadLog, delete_record, read_records, upsert_record

log = logging.getLogger(__name__)


class IndexStore:
    """A `VectorIndex` whose writes are durable when the call returns.

    Writes are appended to the log and applied to the index one at a time, in the same order; each call
    then waits for an fsync covering its record, and concurrent calls share one (group commit). A
    write is visible to searches from the moment it is applied, so a search may see a write that a
    crash before its fsync loses; it is never acknowledged before then. Searches go straight to the
    index. Without a `data_dir` it is a plain in-memory index.

    `placement` (the shard's index and count as started; None: one shard owning everything) decides which
    writes are admitted, checked under the same mutex that orders writes, so a placement change
    (`set_placement`, `lmrec reshard`'s fence) falls between two writes, never inside one. With a
    `data_dir` it is reconciled with, and recorded in, the directory's `placement.json`.

    Raises:
        PlacementMismatch: the recorded placement contradicts `placement`.
    """

    def __init__(self, index: VectorIndex, data_dir: Path | None = None, snapshot_every: int = 10_000,
                 placement: ShardPlacement | None = None) -> None:
        self.index = index
        self.data_dir = data_dir
        self.snapshot_every = snapshot_every
        self._write_mutex = threading.Lock()
        self._generation = 0
        self._wal: WriteAheadLog | None = None
        self._snapshot_thread: threading.Thread | None = None
        self.placement = placement
        # Items held here that the placement gives to other shards, while a move has them frozen.
        self._leaving: list[str] | None = None
        if data_dir is not None:
            self._recover()
            self._settle_placement(placement)

    @classmethod
    def open(cls, settings) -> IndexStore:
        """Builds the index from `settings` and recovers it from `settings.data_dir`."""
        requested = ShardPlacement(settings.shard_index, Placement(settings.shard_count))
        return cls(VectorIndex.from_settings(settings), Path(settings.data_dir), settings.snapshot_every, requested)

    def _settle_placement(self, requested: ShardPlacement | None) -> None:
        assert self.data_dir is not None
        recorded = shard_placement.load(self.data_dir)
        if requested is None:
            self.placement = recorded
            return
        self.placement = shard_placement.resolve_at_start(
            recorded, requested.shard_index, requested.placement.shard_count, len(self.index) > 0)
        if self.placement != recorded:
            shard_placement.save(self.data_dir, self.placement)
        if self.placement.placement.scheme == MODULO:
            log.warning("%s holds %d items placed by modulo hashing (before lmrec recorded placement); writes "
                        "placed by jump hashing are refused until `lmrec reshard --from %d --to %d` moves them",
                        self.data_dir, len(self.index), self.placement.placement.shard_count,
                        self.placement.placement.shard_count)

    # --------------------------------------------------------------- recovery

    def _recover(self) -> None:
        assert self.data_dir is not None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        current = self.data_dir / "CURRENT"
        if current.exists():
            self._generation = int(current.read_text().strip())
        if self._generation:
            self.index.load(self._snapshot_dir(self._generation))
        wal_path = self._wal_path(self._generation)
        records, valid = read_records(wal_path, self.index.dimension)
        for record in records:
            try:
                if record.op == UPSERT:
                    self.index.upsert(record.ids, record.vectors, record.attributes)
                else:
                    self.index.delete(record.ids)
            except ValueError as exc:
                log.warning("skipping a logged write that was rejected when made: %s", exc)
        self._wal = WriteAheadLog(wal_path, valid, len(records))
        log.info(
            "recovered generation %d: %d items, %d log records replayed",
            self._generation,
            len(self.index),
            len(records),
        )
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """Deletes snapshots and logs of other generations, e.g. from a crash during a snapshot."""
        assert self.data_dir is not None
        keep = {self._snapshot_dir(self._generation).name, self._wal_path(self._generation).name, "CURRENT"}
        for entry in self.data_dir.iterdir():
            if entry.name in keep:
                continue
            if entry.name.startswith("snapshot-") and entry.is_dir():
                shutil.rmtree(entry)
            elif entry.name.startswith(("wal-", "CURRENT.")) and entry.is_file():
                entry.unlink()

    def _snapshot_dir(self, generation: int) -> Path:
        assert self.data_dir is not None
        return self.data_dir / f"snapshot-{generation}"

    def _wal_path(self, generation: int) -> Path:
        assert self.data_dir is not None
        return self.data_dir / f"wal-{generation}.log"

    # ----------------------------------------------------------------- writes

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, attributes: Sequence[Attributes | None] | None) -> int:
        """Raises NotOwned (before anything is logged) when the placement gives any of `ids` to another shard."""
        vectors = np.asarray(vectors, dtype=np.float32)
        attrs = [{k: list(v) for k, v in a.items()} if a else None for a in (attributes or [None] * len(ids))]
        return self._write(upsert_record(ids, vectors, attrs), self.index.upsert, ids, vectors, attrs,
                           admit=lambda: shard_placement.check_owned(self.placement, list(ids)))

    def delete(self, ids: Sequence[str]) -> int:
        """Raises NotOwned when a move is copying any of `ids` to another shard (its copy would survive)."""
        return self._write(delete_record(ids), self.index.delete, ids, admit=lambda: self._admit_delete(ids))

    def _admit_delete(self, ids: Sequence[str]) -> None:
        if self.placement is not None and self.placement.moving_from is not None:
            shard_placement.check_deletable(self.placement, [i for i in ids if i in self.index])

    def _write(self, record, apply, *args, admit: Callable[[], None] | None = None) -> int:
        with self._write_mutex:
            if admit is not None:
                admit()
            wal = self._wal
            seq = wal.append(record) if wal is not None else 0
            # Applied in log order. A write the index rejects (ValueError) is in the log too; replay
            # skips it, as the call that made it failed.
            count = apply(*args)
        if wal is not None:
            # A snapshot may have replaced the log meanwhile; closing it made this record durable first.
            wal.wait_durable(seq)
        self._maybe_snapshot()
        return count

    # -------------------------------------------------------------- snapshots

    @property
    def wal_records(self) -> int:
        return self._wal.record_count if self._wal is not None else 0

    def _maybe_snapshot(self) -> None:
        if self._wal is None or self._wal.record_count < self.snapshot_every:
            return
        with self._write_mutex:
            if self._snapshot_thread is not None and self._snapshot_thread.is_alive():
                return
            self._snapshot_thread = threading.Thread(target=self.snapshot, name="retrieval-snapshot", daemon=True)
            self._snapshot_thread.start()

    def snapshot(self) -> None:
        """Writes a snapshot of everything acknowledged so far and starts an empty log.

        Holds off writes (not searches) while the index is saved.
        """
        if self.data_dir is None:
            return
        with self._write_mutex:
            assert self._wal is not None
            if self._wal.record_count == 0 and self._generation:
                return
            generation = self._generation + 1
            final = self._snapshot_dir(generation)
            tmp = final.with_name(final.name + ".tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            self.index.save(tmp)
            os.replace(tmp, final)
            new_wal = WriteAheadLog(self._wal_path(generation), 0, 0)
            _fsync_dir(self.data_dir)
            current_tmp = self.data_dir / "CURRENT.tmp"
            current_tmp.write_text(f"{generation}\n")
            fd = os.open(current_tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(current_tmp, self.data_dir / "CURRENT")
            _fsync_dir(self.data_dir)
            old_wal, old_generation = self._wal, self._generation
            self._wal, self._generation = new_wal, generation
            old_wal.close()
            old_wal.path.unlink(missing_ok=True)
            if old_generation:
                shutil.rmtree(self._snapshot_dir(old_generation), ignore_errors=True)
        log.info("snapshot generation %d written: %d items", generation, len(self.index))

    def wait_for_snapshot(self, timeout: float | None = None) -> None:
        thread = self._snapshot_thread
        if thread is not None:
            thread.join(timeout)

    def close(self) -> None:
        self.wait_for_snapshot()
        with self._write_mutex:
            if self._wal is not None:
                self._wal.close()

    # -------------------------------------------------------------- placement

    def set_placement(self, placement: Placement) -> ShardPlacement:
        """Starts a move to `placement` (idempotent): from now on writes are admitted by it, and items it
        gives to other shards stay here, frozen and searchable, until `drop_misplaced`.

        Raises:
            FailedPrecondition: another move is unfinished, or the store has no placement to change.
        """
        with self._write_mutex:
            current = self.placement
            if current is None:
                raise shard_placement.NotOwned("this retrieval server was started without a shard placement")
            if placement == current.placement:
                return current
            if current.moving_from is not None:
                raise shard_placement.NotOwned(
                    f"{current.describe()}: that move must finish (lmrec reshard) before a move to {placement}")
            updated = ShardPlacement(current.shard_index, placement, moving_from=current.placement)
            if self.data_dir is not None:
                shard_placement.save(self.data_dir, updated)
            self.placement = updated
            self._leaving = None
        log.info("placement: now %s", updated.describe())
        return updated

    def misplaced_ids(self) -> list[str]:
        """Held items the placement gives to other shards, sorted. Mid-move the set is frozen (writes to
        them are refused and no write can add one), so it is computed once per move."""
        placement = self.placement
        if placement is None:
            return []
        if placement.moving_from is not None and self._leaving is not None:
            return self._leaving
        leaving = sorted(i for i in self.index.item_ids() if not placement.owns(i))
        if placement.moving_from is not None:
            self._leaving = leaving
        return leaving

    def export(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray, list[Attributes | None]]:
        return self.index.export(ids)

    def drop_misplaced(self) -> int:
        """Ends a move: deletes the items that left (logged like any delete) and records the placement
        without `moving_from`. Returns how many items it deleted."""
        leaving = self.misplaced_ids()
        with self._write_mutex:
            current = self.placement
            if current is None:
                return 0
            deleted = 0
            if leaving:
                wal = self._wal
                seq = wal.append(delete_record(leaving)) if wal is not None else 0
                deleted = self.index.delete(leaving)
                if wal is not None:
                    wal.wait_durable(seq)
            if current.moving_from is not None:
                settled = ShardPlacement(current.shard_index, current.placement)
                if self.data_dir is not None:
                    shard_placement.save(self.data_dir, settled)
                self.placement = settled
            self._leaving = None
        self._maybe_snapshot()
        log.info("placement: %s; %d items that moved away deleted", self.placement.describe(), deleted)
        return deleted

    # ------------------------------------------------------------------ reads

    def search(
        self, query: np.ndarray, k: int, exclude: Iterable[str] = (), filters: Sequence[AttributeFilter] = (), ef: int | None = None
    ) -> SearchResult:
        return self.index.search(query, k, exclude, filters, ef)

    def vectors_of(self, ids: Iterable[str]) -> tuple[list[str], np.ndarray]:
        return self.index.vectors_of(ids)

    def stats(self) -> IndexStats:
        return self.index.stats()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
