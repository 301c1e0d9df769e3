"""A token bucket per target host, shared by every worker through Redis (one atomic Lua script).

The limit is `count` requests per `window` seconds: the bucket refills continuously at count/window
tokens per second and holds at most `TEL_RATE_LIMIT_BURST` tokens (default 1). With a burst of 1,
no sliding window of `window` seconds ever sees more than `count` requests; a burst of B allows up
to count + B - 1. Limits: `TEL_RATE_LIMIT_DEFAULT` (100/min), per-host `TEL_RATE_LIMIT_HOSTS`, and a
definition's `rateLimit.requestsPerMinute`; the slowest of these applies. A worker waits up to
`TEL_RATE_LIMIT_MAX_WAIT` seconds for a token in-thread; beyond that the task is deferred (re-queued
for later, not failed, not counted as a retry). If Redis is unreachable calls are let through. With no
Redis configured (`TEL_INTEGRATION_LOCAL_STATE`) each process keeps its own buckets (`local_state`).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from typing import Any

import redis

from taskexec.core.config import Settings
from taskexec.core.integration_spec import parse_rate, parse_rate_overrides
from workers.integration.local_state import BUCKETS
from workers.integration.shared import redis_client, run_script, state_key

log = logging.getLogger(__name__)

# ARGV: capacity, tokens per ms, ttl ms -> {granted (1/0), ms until a token is available}
_TAKE = """
local k = KEYS[1]
local capacity, rate, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local b = redis.call('HMGET', k, 'tokens', 'ts')
local tokens, ts = tonumber(b[1]), tonumber(b[2])
if tokens == nil or ts == nil then tokens, ts = capacity, now end
if now > ts then tokens = math.min(capacity, tokens + (now - ts) * rate) end
local granted, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  granted = 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', k, 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', k, ttl)
return {granted, wait}
"""


@functools.lru_cache(maxsize=8)
def _operator_rates(hosts: str, default: str) -> tuple[dict[str, tuple[int, float]], tuple[int, float]]:
    """The parsed TEL_RATE_LIMIT_HOSTS and TEL_RATE_LIMIT_DEFAULT (parsed once, not on every attempt)."""
    return parse_rate_overrides(hosts), parse_rate(default)


def rate_for(host: str, cfg: dict[str, Any], settings: Settings) -> tuple[int, float]:
    """(count, window seconds) for calls to `host`: the slowest of the operator's and the definition's limits."""
    overrides, default = _operator_rates(settings.rate_limit_hosts, settings.rate_limit_default)
    hostname = host.rsplit(":", 1)[0]
    count, window = overrides.get(host) or overrides.get(hostname) or default
    rpm = (cfg.get("rateLimit") or {}).get("requestsPerMinute")
    if isinstance(rpm, int) and rpm > 0 and rpm / 60.0 < count / window:
        return rpm, 60.0
    return count, window


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = redis_client(settings)

    def try_take(self, host: str, count: int, window: float) -> tuple[bool, float]:
        """One atomic attempt: (granted, seconds until a token is expected)."""
        key = state_key(self.settings, "rl", f"{host}:{count}/{window:g}s")
        burst = self.settings.rate_limit_burst
        if self.client is None:
            granted_here, wait_here = BUCKETS.take(key, burst, count / (window * 1000.0))
            return granted_here, wait_here / 1000.0
        ttl_ms = int(window * 1000 * 2) + 1000
        try:
            granted, wait_ms = run_script(self.client, _TAKE, key, burst, count / (window * 1000.0), ttl_ms)
        except redis.RedisError as exc:
            log.warning("rate-limit state unavailable; letting the call through", extra={"error": str(exc)})
            return True, 0.0
        return bool(int(granted)), int(wait_ms) / 1000.0

    def acquire(self, host: str, count: int, window: float) -> float:
        """0.0 once a token is taken (after waiting up to TEL_RATE_LIMIT_MAX_WAIT); else the seconds to defer."""
        deadline = time.monotonic() + self.settings.rate_limit_max_wait_s
        while True:
            granted, wait = self.try_take(host, count, window)
            if granted:
                return 0.0
            if time.monotonic() + wait > deadline:
                # spread the deferred tasks so they do not all come back for the same token
                return wait + random.uniform(0.0, max(wait, window / count) * 2)
            time.sleep(wait + random.uniform(0.0, 0.02))
