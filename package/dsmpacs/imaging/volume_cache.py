"""Built volumes kept in memory within a byte budget (viewer_volume_cache_mb).

A volume takes a second or more to read and hundreds of MiB to hold, and every
plane of a scroll asks for it: it is built once per key and kept, least
recently used evicted first, room made before a new one is allocated (so the
budget holds while it is built), one build at a time, and a volume that alone
needs more than the budget refused (VolumeTooLarge) before any pixel is read.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable, Sequence

from dsmpacs.imaging.volume import Volume, build_volume

__all__ = ["VolumeCache"]


class VolumeCache:
    """Built volumes within ``budget`` bytes, least recently used evicted first.
    One build at a time: two volumes built at once would each make room for
    themselves only, and pass the budget together. A request for a volume being
    built waits for that build and then finds it."""

    def __init__(self, budget: int):
        self.budget = int(budget)
        self._volumes: OrderedDict[Hashable, Volume] = OrderedDict()
        self._lock = threading.Lock()            # the dictionary
        self._build = threading.Lock()           # one build at a time
        self.builds = 0                  # volumes built so far (tests and the log read it)

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._volumes

    @property
    def used(self) -> int:
        with self._lock:
            return sum(v.nbytes for v in self._volumes.values())

    def _hit(self, key) -> Volume | None:
        with self._lock:
            hit = self._volumes.get(key)
            if hit is not None:
                self._volumes.move_to_end(key)
            return hit

    def get(self, key: Hashable, paths: Callable[[], Sequence]) -> Volume:
        """The volume for ``key``, built from ``paths()`` when not cached."""
        hit = self._hit(key)
        if hit is not None:
            return hit
        with self._build:
            hit = self._hit(key)
            if hit is not None:
                return hit
            volume = build_volume(paths(), max_bytes=self.budget, make_room=self._make_room)
            with self._lock:
                self.builds += 1
                self._volumes[key] = volume
                self._evict(keep=key)
            return volume

    def _make_room(self, needed: int) -> None:
        with self._lock:
            self._evict(keep=None, room=needed)

    def trim(self) -> None:
        """Evict until within budget again (a derived array made a volume grow)."""
        with self._lock:
            self._evict(keep=None)

    def _evict(self, keep, room: int = 0) -> None:
        total = sum(v.nbytes for v in self._volumes.values())
        for key in list(self._volumes):
            if total + room <= self.budget:
                break
            if key == keep:
                continue
            total -= self._volumes.pop(key).nbytes
