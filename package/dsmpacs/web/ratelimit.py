"""Login throttling: exponential back-off per (user name, address) and per address.

There is deliberately no limit per user name alone: a stranger failing for
``admin`` from anywhere would then lock the real administrator out
everywhere. Instead failures count for the pair (name, address) and for the
address: after ``free`` failures each further one doubles the wait (4 s, 8 s,
16 s ... up to ``max_wait``) before the next attempt from there is heard. The
real user at their own address has no failures counted against them. A key
with no failure for ``forget`` seconds starts afresh.

A guesser spread over many addresses is not slowed by this, so every failure
is audited, and a burst over all keys (more than ``alert_per_minute`` within
a minute) is reported to the caller, which raises a security alert.

Counts live in the web process's memory: one web process serves every request
(the web server's threads share it), an attacker's burst must not become a burst of
index writes, and a restart, which forgets the counts, takes longer than an
attacker gains from it. The audit trail, which persists, has every failure.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import Callable, Hashable

FIRST_WAIT = 4.0     # seconds; a person who mistyped a few times barely notices it


class _Backoff:
    """(failures, time of the last) per key, bounded in keys (oldest forgotten first)."""

    def __init__(self, free: int, forget: float, max_wait: float, max_keys: int = 20000):
        self.free = free
        self.forget = forget
        self.max_wait = max_wait
        self.max_keys = max_keys
        self.entries: "OrderedDict[Hashable, tuple[int, float]]" = OrderedDict()

    def _count(self, key: Hashable, now: float) -> tuple[int, float]:
        entry = self.entries.get(key)
        if entry is None or now - entry[1] >= self.forget:
            return 0, 0.0
        return entry

    def wait(self, key: Hashable, now: float) -> float:
        count, last = self._count(key, now)
        if count < self.free:
            return 0.0
        delay = min(self.max_wait, FIRST_WAIT * 2.0 ** min(count - self.free, 40))
        return max(0.0, last + delay - now)

    def add(self, key: Hashable, now: float) -> int:
        count = self._count(key, now)[0] + 1
        self.entries[key] = (count, now)
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_keys:
            self.entries.popitem(last=False)
        return count

    def clear(self, key: Hashable) -> None:
        self.entries.pop(key, None)


class LoginThrottle:
    def __init__(self, per_pair: int, per_address: int, forget: float, *, max_wait: float = 900,
                 alert_per_minute: int = 30, clock: Callable[[], float] = time.monotonic):
        self._pairs = _Backoff(per_pair, forget, max_wait)
        self._addresses = _Backoff(per_address, forget, max_wait)
        self._recent: deque[float] = deque(maxlen=alert_per_minute + 1)
        self._clock = clock
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> "LoginThrottle":
        return cls(settings.login_limit_per_user, settings.login_limit_per_address,
                   settings.login_limit_window, max_wait=settings.login_backoff_max,
                   alert_per_minute=settings.login_alert_per_minute)

    def retry_after(self, user_key: str, address: str) -> float:
        """Seconds the caller must wait before trying this user from this address."""
        now = self._clock()
        with self._lock:
            return max(self._pairs.wait((user_key, address), now) if user_key else 0.0,
                       self._addresses.wait(address, now))

    def failure(self, user_key: str, address: str) -> bool:
        """Count a failure; True when failures over all keys now form a burst."""
        now = self._clock()
        with self._lock:
            if user_key:
                self._pairs.add((user_key, address), now)
            self._addresses.add(address, now)
            self._recent.append(now)
            return len(self._recent) == self._recent.maxlen and now - self._recent[0] < 60

    def success(self, user_key: str, address: str) -> None:
        """A right password clears that name's failures from that address (not the
        address's: one good account must not reset an address guessing others)."""
        with self._lock:
            self._pairs.clear((user_key, address))
