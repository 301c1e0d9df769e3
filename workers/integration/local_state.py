"""Breaker and rate-limit state kept in this process, for `TEL_INTEGRATION_LOCAL_STATE=true` only.

The normal home of that state is Redis (`shared`), where every integration worker sees the same
circuit and the same token bucket per target host. Without a Redis an integration pool refuses to
start, unless the operator says that per-process state is acceptable: then each process keeps its
own circuits and buckets here, with the same rules as the Lua scripts of `breaker` and `ratelimit`
(so N processes admit up to N times a host's rate limit, and each must see the failures itself).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

# Above this many buckets, those idle for an hour are dropped (refilled by then: the same as a new one).
_PRUNE_ABOVE = 10_000


def _now_ms() -> float:
    return time.monotonic() * 1000.0


@dataclass
class _Circuit:
    state: str = "closed"
    failures: int = 0
    opened_at: float = 0.0
    trial_until: float = 0.0


class LocalBreakers:
    """Circuits per key (one per host): closed -> open after `threshold` failures -> one trial after `open_ms`."""

    def __init__(self) -> None:
        self._circuits: dict[str, _Circuit] = {}
        self._lock = threading.Lock()

    def blocked_ms(self, key: str, open_ms: int) -> int:
        with self._lock:
            c = self._circuits.get(key)
            if c is None or c.state != "open":
                return 0
            return max(0, int(open_ms - (_now_ms() - c.opened_at)))

    def acquire(self, key: str, open_ms: int, trial_ms: int) -> tuple[int, int]:
        """(decision, wait ms): 1 closed (go), 2 trial (go, half-open), 0 refused."""
        now = _now_ms()
        with self._lock:
            c = self._circuits.get(key)
            if c is None or c.state == "closed":
                return 1, 0
            if c.state == "open" and now - c.opened_at < open_ms:
                return 0, int(open_ms - (now - c.opened_at))
            if c.state == "half_open" and now < c.trial_until:
                return 0, int(c.trial_until - now)
            c.state, c.trial_until = "half_open", now + trial_ms
            return 2, 0

    def record(self, key: str, ok: bool, threshold: int) -> str:
        """A call's result; returns the circuit's state afterwards."""
        with self._lock:
            c = self._circuits.get(key)
            state = c.state if c else "closed"
            if state == "open":
                return "open"
            if ok:
                self._circuits.pop(key, None)
                return "closed"
            c = c or self._circuits.setdefault(key, _Circuit())
            c.failures += 1
            if state == "half_open" or c.failures >= threshold:
                c.state, c.opened_at, c.trial_until = "open", _now_ms(), 0.0
                return "open"
            c.state = "closed"
            return "closed"


class LocalBuckets:
    """Token buckets: `capacity` tokens at most, refilled at `rate_per_ms`."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at ms)
        self._lock = threading.Lock()

    def take(self, key: str, capacity: int, rate_per_ms: float) -> tuple[bool, int]:
        """(granted, ms until a token is expected)."""
        now = _now_ms()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(capacity), now))
            tokens = min(float(capacity), tokens + max(0.0, now - at) * rate_per_ms)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                granted, wait = True, 0
            else:
                self._buckets[key] = (tokens, now)
                granted, wait = False, int(-(-(1 - tokens) // rate_per_ms))
            if len(self._buckets) > _PRUNE_ABOVE:
                self._prune(now)
            return granted, wait

    def _prune(self, now: float) -> None:
        idle = [k for k, (_, at) in self._buckets.items() if now - at > 3_600_000]
        for k in idle:
            del self._buckets[k]


BREAKERS = LocalBreakers()
BUCKETS = LocalBuckets()
