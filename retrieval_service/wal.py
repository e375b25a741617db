"""Append-only write-ahead log of index writes, one record per acknowledged request.

Record: <u32 payload length><u32 crc32 of payload><payload>. Payload: one op byte (U or D), a u32
length, a JSON header (ids, attributes), then for upserts the float32 vectors, row-major.
A crash mid-append leaves a torn last record; opening the log drops it and truncates the file there.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
_META_LEN = struct.Struct("<I")
UPSERT = b"U"
DELETE = b"D"


@dataclass(frozen=True)
class WalRecord:
    op: bytes
    ids: list[str]
    vectors: np.ndarray | None = None
    attributes: list | None = None


def encode(record: WalRecord) -> bytes:
    meta = {"ids": record.ids}
    if record.op == UPSERT:
        meta["attributes"] = record.attributes
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode("utf-8")
    parts = [record.op, _META_LEN.pack(len(meta_bytes)), meta_bytes]
    if record.op == UPSERT:
        parts.append(np.ascontiguousarray(record.vectors, dtype="<f4").tobytes())
    payload = b"".join(parts)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes, dimension: int) -> WalRecord:
    op = payload[:1]
    (meta_len,) = _META_LEN.unpack_from(payload, 1)
    meta = json.loads(payload[5 : 5 + meta_len])
    if op == DELETE:
        return WalRecord(DELETE, meta["ids"])
    vectors = np.frombuffer(payload, dtype="<f4", offset=5 + meta_len).reshape(len(meta["ids"]), dimension)
    return WalRecord(UPSERT, meta["ids"], vectors, meta["attributes"])


def read_records(path: Path, dimension: int) -> tuple[list[WalRecord], int]:
    """Returns the intact records and the byte offset where they end (a torn tail starts there)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    records: list[WalRecord] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        records.append(decode(payload, dimension))
        offset = start + length
    if offset != len(data):
        log.warning("%s: dropping %d bytes of a torn last record", path, len(data) - offset)
    return records, offset


class WriteAheadLog:
    """An open log file with group commit.

    `append` writes a record and returns its sequence number; `wait_durable(seq)` returns once an fsync
    that began after that record was written has finished. Concurrent writers waiting together share
    one fsync: whoever finds none running starts one covering everything written so far, the others
    wait for it (or for the next one). Appends must be serialised by the caller; waits need not be.
    """

    def __init__(self, path: Path, valid_length: int, record_count: int) -> None:
        self.path = path
        self.record_count = record_count
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        # Cut a torn tail so new records follow the last intact one.
        os.ftruncate(fd, valid_length)
        os.lseek(fd, valid_length, os.SEEK_SET)
        os.fsync(fd)
        self._fd = fd
        self._cond = threading.Condition(threading.Lock())
        self._written = 0
        self._synced = 0
        self._syncing = False
        self.fsync_count = 0

    def append(self, record: WalRecord) -> int:
        """Writes `record` (not yet durable) and returns its sequence number for `wait_durable`."""
        data = encode(record)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.record_count += 1
        with self._cond:
            self._written += 1
            return self._written

    def wait_durable(self, seq: int) -> None:
        """Returns once record `seq` is on stable storage.

        Raises:
            OSError: the fsync failed (the record may or may not be durable).
        """
        with self._cond:
            while self._synced < seq:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._sync_locked()

    def _sync_locked(self) -> None:
        """One fsync covering every record written so far; called and returns holding `_cond`."""
        self._syncing = True
        target = self._written
        done = False
        self._cond.release()
        try:
            os.fsync(self._fd)
            done = True
        finally:
            self._cond.acquire()
            self._syncing = False
            if done:
                self._synced = max(self._synced, target)
                self.fsync_count += 1
            self._cond.notify_all()

    def close(self) -> None:
        """Makes everything written durable, then closes the file."""
        with self._cond:
            while self._syncing:
                self._cond.wait()
            if self._fd < 0:
                return
            if self._synced < self._written:
                self._sync_locked()
            os.close(self._fd)
            self._fd = -1


def upsert_record(ids: Sequence[str], vectors: np.ndarray, attributes: Sequence | None) -> WalRecord:
    return WalRecord(UPSERT, list(ids), vectors, list(attributes) if attributes is not None else [None] * len(ids))


def delete_record(ids: Sequence[str]) -> WalRecord:
    return WalRecord(DELETE, list(ids))
