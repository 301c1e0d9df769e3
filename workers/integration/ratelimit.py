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

# take(key, capacity, tokens per ms, ttl ms) -> {granted (1/0), ms until a token is available}; also run by `gate`
TAKE_FN = """
local function take(k, capacity, rate, ttl)
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
end
"""
_TAKE = TAKE_FN + "return take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))"


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

    def key(self, host: str, count: int, window: float) -> str:
        """The bucket of `host` at this limit (a changed limit starts a new bucket)."""
        return state_key(self.settings, "rl", f"{host}:{count}/{window:g}s")

    def bucket_args(self, count: int, window: float) -> tuple[int, float, int]:
        """The script's capacity, tokens per ms and key lifetime (ms) for this limit."""
        return self.settings.rate_limit_burst, count / (window * 1000.0), int(window * 1000 * 2) + 1000

    def try_take(self, host: str, count: int, window: float) -> tuple[bool, float]:
        """One atomic attempt: (granted, seconds until a token is expected)."""
        key = self.key(host, count, window)
        capacity, rate, ttl_ms = self.bucket_args(count, window)
        if self.client is None:
            granted_here, wait_here = BUCKETS.take(key, capacity, rate)
            return granted_here, wait_here / 1000.0
        try:
            granted, wait_ms = run_script(self.client, _TAKE, [key], capacity, rate, ttl_ms)
        except redis.RedisError as exc:
            log.warning("rate-limit state unavailable; letting the call through", extra={"error": str(exc)})
            return True, 0.0
        return bool(int(granted)), int(wait_ms) / 1000.0

    def acquire(self, host: str, count: int, window: float, first: tuple[bool, float] | None = None) -> float:
        """0.0 once a token is taken (after waiting up to TEL_RATE_LIMIT_MAX_WAIT); else the seconds to defer.
        `first`: the answer of a `try_take` already made (by `gate.admit`), so it is not asked twice."""
        deadline = time.monotonic() + self.settings.rate_limit_max_wait_s
        while True:
            granted, wait = first if first is not None else self.try_take(host, count, window)
            first = None
            if granted:
                return 0.0
            if time.monotonic() + wait > deadline:
                # spread the deferred tasks so they do not all come back for the same token
                return wait + random.uniform(0.0, max(wait, window / count) * 2)
            time.sleep(wait + random.uniform(0.0, 0.02))
