"""Login throttling: failed attempts per user name and per client address.

Counts live in the web process's memory. One web process serves every request
(waitress threads share it), so memory is the whole truth; it costs no index
write per attempt (an attacker's burst would otherwise become a burst of
writes to the index the DICOM daemon is committing to); and a restart, which
forgets the counts, takes longer than an attacker gains from it. Every failure
is also in the audit trail, which persists.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import Callable


class _Window:
    """Failure times per key within a sliding window, bounded in keys."""

    def __init__(self, limit: int, window: float, max_keys: int = 10000):
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.failures: "OrderedDict[str, deque[float]]" = OrderedDict()

    def _prune(self, key: str, now: float) -> deque[float] | None:
        times = self.failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self.failures[key]
            return None
        return times

    def wait(self, key: str, now: float) -> float:
        """Seconds until one more attempt is allowed (0: allowed now)."""
        times = self._prune(key, now)
        if times is None or len(times) < self.limit:
            return 0.0
        return times[len(times) - self.limit] + self.window - now

    def add(self, key: str, now: float) -> None:
        times = self._prune(key, now)
        if times is None:
            times = self.failures[key] = deque()
        times.append(now)
        self.failures.move_to_end(key)
        while len(self.failures) > self.max_keys:
            self.failures.popitem(last=False)

    def clear(self, key: str) -> None:
        self.failures.pop(key, None)


class LoginThrottle:
    def __init__(self, per_user: int, per_address: int, window: float,
                 clock: Callable[[], float] = time.monotonic):
        self._users = _Window(per_user, window)
        self._addresses = _Window(per_address, window)
        self._clock = clock
        self._lock = threading.Lock()

    def retry_after(self, user_key: str, address: str) -> float:
        """Seconds the caller must wait before trying this user from this address."""
        now = self._clock()
        with self._lock:
            return max(self._users.wait(user_key, now) if user_key else 0.0,
                       self._addresses.wait(address, now))

    def failure(self, user_key: str, address: str) -> None:
        now = self._clock()
        with self._lock:
            if user_key:
                self._users.add(user_key, now)
            self._addresses.add(address, now)

    def success(self, user_key: str) -> None:
        """A right password clears that user's failures (not the address's: one
        good account must not reset an address that is guessing others)."""
        with self._lock:
            self._users.clear(user_key)
