"""A circuit breaker per target host, shared by every worker through Redis (atomic Lua scripts).

closed -> open after `TEL_CIRCUIT_FAILURE_THRESHOLD` consecutive failures (default 5); while open,
calls fail fast with CIRCUIT_OPEN; after `TEL_CIRCUIT_OPEN_SECONDS` (default 30) one trial call is let
through (half-open): its success closes the circuit, its failure opens it again. Times come from the
Redis server clock, so workers on different hosts agree. If Redis is unreachable the breaker lets
calls through (fail open) and logs a warning. With no Redis configured (`TEL_INTEGRATION_LOCAL_STATE`)
the same rules run on per-process state (`local_state`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from taskexec.core.config import Settings
from workers.integration.local_state import BREAKERS
from workers.integration.shared import redis_client, run_script, state_key

log = logging.getLogger(__name__)

# -> {decision, wait_ms}: decision 1 = closed (go), 2 = trial (go, half-open), 0 = refused
_ACQUIRE = """
local k = KEYS[1]
local open_ms, trial_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', k, 'state')
if not state or state == 'closed' then return {1, 0} end
if state == 'open' then
  local opened = tonumber(redis.call('HGET', k, 'opened_at') or '0')
  if now - opened < open_ms then return {0, open_ms - (now - opened)} end
end
local busy = tonumber(redis.call('HGET', k, 'trial_until') or '0')
if state == 'half_open' and now < busy then return {0, busy - now} end
redis.call('HSET', k, 'state', 'half_open', 'trial_until', now + trial_ms)
return {2, 0}
"""

# check(key, open_ms) -> {ms until an open circuit admits a trial (0 when closed, half-open or due), 1 when closed
#     and no failure is counted (a call needs no `acquire`, and its success no `record`), else 0}; also run by `gate`
CHECK_FN = """
local function check(k, open_ms)
  local s = redis.call('HMGET', k, 'state', 'failures', 'opened_at')
  local state, failures = s[1] or 'closed', tonumber(s[2] or '0')
  if state ~= 'open' then
    if state == 'closed' and failures == 0 then return {0, 1} end
    return {0, 0}
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local left = open_ms - (now - tonumber(s[3] or '0'))
  if left > 0 then return {left, 0} end
  return {0, 0}
end
"""
_CHECK = CHECK_FN + "return check(KEYS[1], tonumber(ARGV[1]))"

# ARGV: ok (1/0), threshold, ttl seconds -> new state
_RECORD = """
local k = KEYS[1]
local ok, threshold, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', k, 'state') or 'closed'
if ok == 1 then
  if state == 'open' then return 'open' end
  redis.call('DEL', k)
  return 'closed'
end
if state == 'open' then return 'open' end
local n = redis.call('HINCRBY', k, 'failures', 1)
if state == 'half_open' or n >= threshold then
  redis.call('HSET', k, 'state', 'open', 'opened_at', now)
  redis.call('HDEL', k, 'trial_until')
  redis.call('EXPIRE', k, ttl)
  return 'open'
end
redis.call('HSET', k, 'state', 'closed')
redis.call('EXPIRE', k, ttl)
return 'closed'
"""


@dataclass(frozen=True)
class Check:
    """A read-only look at a host's circuit: `open_ms` until a trial is due (0: a call may be attempted);
    `clean`: closed with no failure counted, so a call needs no `acquire` and its success no `record`."""

    open_ms: int = 0
    clean: bool = False


@dataclass(frozen=True)
class Permit:
    allowed: bool
    trial: bool = False
    wait_ms: int = 0


class CircuitBreaker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = redis_client(settings)
        self.open_ms = int(settings.circuit_open_s * 1000)
        # state outlives the open period comfortably, then cleans itself up
        self.ttl_s = max(3600, int(settings.circuit_open_s * 10))

    def key(self, host: str) -> str:
        return state_key(self.settings, "cb", host)

    def check(self, host: str) -> Check:
        """Read-only: how long `host`'s circuit stays open, and whether it is clean (see `Check`)."""
        if self.client is None:  # in-process state (TEL_INTEGRATION_LOCAL_STATE): acquire and record always
            return Check(BREAKERS.blocked_ms(self.key(host), self.open_ms), False)
        try:
            left, clean = run_script(self.client, _CHECK, [self.key(host)], self.open_ms)
        except redis.RedisError:
            return Check()
        return Check(int(left), bool(int(clean)))

    def open_for_ms(self, host: str) -> int:
        """Read-only: how long `host`'s circuit stays open (0 if a call may be attempted)."""
        return self.check(host).open_ms

    def acquire(self, host: str, trial_ms: int) -> Permit:
        """May a call to `host` go out now? `trial_ms` bounds how long a half-open trial holds the slot."""
        if self.client is None:
            decision, wait = BREAKERS.acquire(self.key(host), self.open_ms, max(1000, trial_ms))
            return Permit(decision > 0, trial=decision == 2, wait_ms=wait)
        try:
            decision, wait = run_script(self.client, _ACQUIRE, [self.key(host)], self.open_ms,
                                              max(1000, trial_ms))
        except redis.RedisError as exc:
            log.warning("circuit breaker state unavailable; letting the call through", extra={"error": str(exc)})
            return Permit(True)
        return Permit(int(decision) > 0, trial=int(decision) == 2, wait_ms=int(wait))

    def record(self, host: str, ok: bool) -> str:
        """Report the call's result; returns the host's circuit state afterwards."""
        if self.client is None:
            state = BREAKERS.record(self.key(host), ok, self.settings.circuit_failure_threshold)
        else:
            try:
                state = run_script(self.client, _RECORD, [self.key(host)], 1 if ok else 0,
                                   self.settings.circuit_failure_threshold, self.ttl_s)
            except redis.RedisError as exc:
                log.warning("circuit breaker state unavailable", extra={"error": str(exc)})
                return "unknown"
            state = state.decode() if isinstance(state, bytes) else str(state)
        if state == "open" and not ok:
            log.warning("circuit open", extra={"host": host})
        return state
