"""Concurrency primitives around hnswlib, whose inserts and resizes are not safe alongside queries."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadersWriterLock:
    """Many readers or one writer. Writers are preferred so a stream of searches cannot starve an upsert."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class SharedSetting:
    """Lets concurrent holders share one value of a process-wide knob and makes other values wait.

    hnswlib's `ef` is a field of the index, not a query argument: two searches with different `ef`
    must not run at once, while any number with the same `ef` may.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._value: int | None = None
        self._holders = 0

    @contextmanager
    def hold(self, value: int) -> Iterator[None]:
        with self._cond:
            while self._holders and self._value != value:
                self._cond.wait()
            self._value = value
            self._holders += 1
        try:
            yield
        finally:
            with self._cond:
                self._holders -= 1
                if self._holders == 0:
                    self._cond.notify_all()
