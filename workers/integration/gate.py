"""Before an integration call: the target's circuit and a rate-limit token, in one Redis round trip.

Every attempt first looks at its host's circuit (fail fast while open, `breaker.check`) and then takes a
token of its host's bucket (`ratelimit`). Run one after the other that is two EVALSHA calls per task, a
measurable part of a busy pool's CPU; `admit` runs the same two Lua functions as one script, with the same
rule: while the circuit is open no token is spent. A refused token is then waited for (or the task
deferred) by `RateLimiter.acquire`, as before. The two keys of one host are read in one script, so with a
clustered Redis they would need a shared hash slot; taskexec uses a single Redis (or its replicas).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from workers.integration.breaker import CHECK_FN, Check, CircuitBreaker
from workers.integration.ratelimit import TAKE_FN, RateLimiter
from workers.integration.shared import run_script

log = logging.getLogger(__name__)

# KEYS: circuit, bucket; ARGV: open_ms, capacity, tokens per ms, ttl ms -> {open ms left, clean, granted, wait ms}
_LOOK_AND_TAKE = CHECK_FN + TAKE_FN + """
local look = check(KEYS[1], tonumber(ARGV[1]))
if look[1] > 0 then return {look[1], 0, 0, 0} end
local got = take(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
return {0, look[2], got[1], got[2]}
"""


@dataclass(frozen=True)
class Admission:
    """The circuit as seen (`look.open_ms` > 0: refused, and no token taken) and the token: taken, or due in
    `wait_s` seconds."""

    look: Check
    granted: bool
    wait_s: float

    @property
    def token(self) -> tuple[bool, float]:
        """What `RateLimiter.acquire(first=...)` takes."""
        return self.granted, self.wait_s


def admit(breaker: CircuitBreaker, limiter: RateLimiter, host: str, count: int, window: float) -> Admission:
    """Look at `host`'s circuit and, unless it is open, take a token of its `count`/`window` bucket."""
    if breaker.client is None or limiter.client is None:  # per-process state: no round trip to save
        look = breaker.check(host)
        if look.open_ms:
            return Admission(look, False, 0.0)
        return Admission(look, *limiter.try_take(host, count, window))
    try:
        left, clean, granted, wait_ms = run_script(
            breaker.client, _LOOK_AND_TAKE, [breaker.key(host), limiter.key(host, count, window)],
            breaker.open_ms, *limiter.bucket_args(count, window))
    except redis.RedisError as exc:  # as each part alone: the call is let through
        log.warning("circuit breaker and rate-limit state unavailable; letting the call through",
                    extra={"error": str(exc)})
        return Admission(Check(), True, 0.0)
    return Admission(Check(int(left), bool(int(clean))), bool(int(granted)), int(wait_ms) / 1000.0)
