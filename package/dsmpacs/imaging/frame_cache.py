"""What rendering keeps between requests: decoded frames, grey lookup tables and
encoded pictures.

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
  output is identical) and then applied with one ``numpy.take``;
- encoded pictures (the JPEG, PNG or WebP bytes of one frame drawn with one set of
  parameters) are kept too, by the same file key plus every parameter of the
  drawing: a cine loop or a DICOMweb client asks for the same frames again and
  again, and encoding is the largest part of a rendered frame once the frame is
  decoded (about 1 ms of a 512x512 JPEG's 2 ms here). Authorisation, and the
  refusal of a file known to be corrupt, run before rendering is asked, so a
  kept picture is only ever handed to a request that could have drawn it.
"""
from __future__ import annotations

import numpy as np

from dsmpacs.imaging.memo import Memo

__all__ = ["FRAME_CACHE_BYTES", "PICTURE_CACHE_BYTES", "frames", "grey_tables", "pictures"]

# A 512x512x40 run of 16-bit pixels is 21 MB: a few runs being viewed at once.
FRAME_CACHE_BYTES = 96 * 1024 * 1024
# A table over 16-bit values is 64 KB; windows dragged across a few series.
TABLE_CACHE_ITEMS = 64
# A 512x512 JPEG at quality 90 is 50-200 KB: a few runs' cine loops at a few windows.
PICTURE_CACHE_BYTES = 32 * 1024 * 1024


frames = Memo(max_bytes=FRAME_CACHE_BYTES)
grey_tables = Memo(TABLE_CACHE_ITEMS, TABLE_CACHE_ITEMS * 256 * 1024)
pictures = Memo(max_bytes=PICTURE_CACHE_BYTES)


def read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array
