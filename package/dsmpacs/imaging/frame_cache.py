"""What rendering keeps between requests: decoded frames and grey lookup tables.

A viewer plays a run's frames over and over (cine, window/level drags, the
thumbnail strip) and each request renders one of them. Decoding a frame
(reading it, unpacking or decompressing it) and the float arithmetic of the
Modality LUT and window cost more than encoding the JPEG, so:

- decoded frames are kept (imaging/memo.py), least recently used first out, up to a byte budget,
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

import numpy as np

from dsmpacs.imaging.memo import Memo

__all__ = ["FRAME_CACHE_BYTES", "frames", "grey_tables"]

# A 512x512x40 run of 16-bit pixels is 21 MB: a few runs being viewed at once.
FRAME_CACHE_BYTES = 96 * 1024 * 1024
# A table over 16-bit values is 64 KB; windows dragged across a few series.
TABLE_CACHE_ITEMS = 64


frames = Memo(max_bytes=FRAME_CACHE_BYTES)
grey_tables = Memo(TABLE_CACHE_ITEMS, TABLE_CACHE_ITEMS * 256 * 1024)


def read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array
