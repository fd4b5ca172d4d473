"""What rendering keeps between requests: decoded frames and grey lookup tables.

A viewer plays a run's frames over and over (cine, window/level drags, the
thumbnail strip) and each request renders one of them. Decoding a frame
(reading it, unpacking or decompressing it) and the float arithmetic of the
Modality LUT and window cost more than encoding the JPEG, so:

- decoded frames are kept, least recently used first out, up to a byte budget,
  keyed by the file's path, size and modification time (a replaced file is a new
  key; a stored file is otherwise never changed in place). The arrays are made
  read-only, so that no caller can alter what the next request will see;
- for integer grey pixels with a linear Modality LUT (rescale slope and
  intercept, or none), the whole chain stored value -> modality value -> window
  -> 0..255 (-> MONOCHROME1 inversion) is one table over every possible stored
  value, computed with the very functions the per-pixel path uses (so the
  output is identical) and then applied with one ``numpy.take``.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

import numpy as np

__all__ = ["FRAME_CACHE_BYTES", "frames", "grey_tables", "ByteLRU"]

# A 512x512x40 run of 16-bit pixels is 21 MB: a few runs being viewed at once.
FRAME_CACHE_BYTES = 96 * 1024 * 1024
# A table over 16-bit values is 64 KB; windows dragged across a few series.
TABLE_CACHE_ITEMS = 64


class ByteLRU:
    """A thread-safe least-recently-used map bounded by item count and total bytes."""

    def __init__(self, max_bytes: int, max_items: int = 100_000):
        self.max_bytes, self.max_items = max_bytes, max_items
        self._items: OrderedDict[tuple, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple, compute: Callable[[], object], size: Callable[[object], int]) -> object:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found[0]
        # Computed outside the lock: two requests for the same new frame may both
        # decode it (rare, harmless); other frames are never held up meanwhile.
        value = compute()
        nbytes = size(value)
        if nbytes <= self.max_bytes:
            with self._lock:
                previous = self._items.pop(key, None)
                if previous is not None:
                    self._bytes -= previous[1]
                self._items[key] = (value, nbytes)
                self._bytes += nbytes
                while self._items and (self._bytes > self.max_bytes or len(self._items) > self.max_items):
                    _, (_, freed) = self._items.popitem(last=False)
                    self._bytes -= freed
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)


frames = ByteLRU(FRAME_CACHE_BYTES)
grey_tables = ByteLRU(TABLE_CACHE_ITEMS * 256 * 1024, TABLE_CACHE_ITEMS)


def read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array
