"""A bounded, thread-safe memory of keys seen recently in this process.

The ingest observers (archive/reconcile.py, archive/reading.py) decide once per
study; remembering the studies they have decided spares every later instance of a
study a query. The memory is only a shortcut: losing it (a restart, an eviction)
costs one query, never a wrong decision, because the index keeps the decision.
"""
from __future__ import annotations

import threading
from collections import OrderedDict


class RecentKeys:
    def __init__(self, size: int = 4096):
        self.size = size
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: str) -> bool:
        with self._lock:
            if key in self._keys:
                self._keys.move_to_end(key)
                return True
            return False

    def add(self, key: str) -> None:
        with self._lock:
            self._keys[key] = None
            self._keys.move_to_end(key)
            while len(self._keys) > self.size:
                self._keys.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()
