"""A bounded, thread-safe memo of computed imaging results (decoded frames, grey
tables, a run's peak frame, window and road map), shared by rendering and DSA.

Least recently used first out, bounded by item count and, where given, total
bytes. Concurrent requests for the same key wait for one computation instead of
each doing it: a cine prefetch asks for a dozen frames of one run at once, and a
road map reads the whole run. Different keys never wait for each other."""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Callable


def file_key(path) -> tuple:
    """A stored file as a cache key: a replaced file (new size or mtime) is a new key;
    a stored file is otherwise never changed in place."""
    st = os.stat(path)
    return (os.fspath(path), st.st_size, st.st_mtime_ns)


class Memo:
    def __init__(self, max_items: int = 100_000, max_bytes: int | None = None):
        self._items: OrderedDict[tuple, tuple[object, int]] = OrderedDict()
        self._pending: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()
        self._bytes = 0
        self.max_items, self.max_bytes = max_items, max_bytes

    def _cached(self, key):
        if key in self._items:
            self._items.move_to_end(key)
            return True, self._items[key][0]
        return False, None

    def get(self, key: tuple, compute: Callable[[], object], size: Callable[[object], int] = lambda v: 0):
        with self._lock:
            hit, value = self._cached(key)
            if hit:
                return value
            pending = self._pending.setdefault(key, threading.Lock())
        with pending:
            with self._lock:
                hit, value = self._cached(key)
                if hit:
                    return value
            try:
                value = compute()
            finally:
                with self._lock:
                    self._pending.pop(key, None)
            nbytes = size(value)
            with self._lock:
                if self.max_bytes is None or nbytes <= self.max_bytes:
                    previous = self._items.pop(key, None)
                    if previous is not None:
                        self._bytes -= previous[1]
                    self._items[key] = (value, nbytes)
                    self._bytes += nbytes
                while self._items and (len(self._items) > self.max_items or (
                        self.max_bytes is not None and self._bytes > self.max_bytes)):
                    _, (_, freed) = self._items.popitem(last=False)
                    self._bytes -= freed
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)
