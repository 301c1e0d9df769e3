"""Circuit breaker and token bucket: against the real Redis (keys under a unique prefix, never flushed), and
with the same rules on per-process state (`TEL_INTEGRATION_LOCAL_STATE=true`, no Redis configured)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from taskexec.core.config import Settings
from tests.support import REDIS_URL
from workers.integration.breaker import CircuitBreaker
from workers.integration.gate import admit
from workers.integration.ratelimit import RateLimiter


@pytest.fixture(params=["redis", "per-process"])
def settings(request: pytest.FixtureRequest) -> Iterator[Settings]:
    prefix = f"tel:unit:{uuid.uuid4().hex[:8]}"
    where = ({"TEL_REDIS_URL": REDIS_URL} if request.param == "redis" else
             {"CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//", "TEL_INTEGRATION_LOCAL_STATE": "true"})
    s = Settings(TEL_INTEGRATION_KEY_PREFIX=prefix, TEL_CIRCUIT_FAILURE_THRESHOLD="3",  # type: ignore[call-arg]
                 TEL_CIRCUIT_OPEN_SECONDS="0.5", TEL_RATE_LIMIT_BURST="2", TEL_RATE_LIMIT_MAX_WAIT="1.0", **where)
    assert (CircuitBreaker(s).client is None) == (request.param == "per-process")
    yield s
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def test_breaker_opens_after_consecutive_failures_then_half_opens_once(settings: Settings) -> None:
    cb = CircuitBreaker(settings)
    host = "h:1"
    cb.record(host, ok=False)
    cb.record(host, ok=True)  # a success resets the count: failures must be consecutive
    assert cb.record(host, ok=False) == "closed" and cb.record(host, ok=False) == "closed"
    assert cb.record(host, ok=False) == "open"
    refused = cb.acquire(host, 1000)
    assert not refused.allowed and 0 < refused.wait_ms <= 500 and cb.open_for_ms(host) > 0
    time.sleep(0.55)
    assert cb.open_for_ms(host) == 0
    trial = cb.acquire(host, 5000)
    assert trial.allowed and trial.trial
    assert not cb.acquire(host, 5000).allowed, "only one trial while half-open"
    assert cb.record(host, ok=False) == "open"  # the trial failed: open again
    time.sleep(0.55)
    assert cb.acquire(host, 5000).trial
    assert cb.record(host, ok=True) == "closed"
    assert cb.acquire(host, 5000).allowed and not cb.acquire(host, 5000).trial


def test_token_bucket_burst_refill_and_deferral(settings: Settings) -> None:
    rl = RateLimiter(settings)
    host = "h:2"
    assert rl.try_take(host, 2, 1.0)[0] and rl.try_take(host, 2, 1.0)[0]  # burst of 2
    granted, wait = rl.try_take(host, 2, 1.0)
    assert not granted and 0 < wait <= 0.5
    assert rl.acquire(host, 2, 1.0) == 0.0  # waits in-thread (< TEL_RATE_LIMIT_MAX_WAIT) for the next token
    assert rl.acquire(host, 1, 60.0) == 0.0  # another limit is another bucket (burst 2)
    assert rl.acquire(host, 1, 60.0) == 0.0
    assert rl.acquire(host, 1, 60.0) > 50  # a minute away: defer instead of waiting


def test_admit_looks_at_the_circuit_then_takes_a_token_in_one_step(settings: Settings) -> None:
    """`gate.admit`: what `check` then `try_take` would answer; an open circuit spends no token."""
    cb, rl = CircuitBreaker(settings), RateLimiter(settings)
    host = "h:3"
    first = admit(cb, rl, host, 2, 10.0)
    # per-process state is never called clean: the call always asks for a permit and records its result
    assert first.look.open_ms == 0 and first.look.clean == (cb.client is not None) and first.token == (True, 0.0)
    cb.record(host, ok=False)
    second = admit(cb, rl, host, 2, 10.0)  # a failure counted: not clean (the call asks for a permit)
    assert second.look.open_ms == 0 and not second.look.clean and second.granted
    third = admit(cb, rl, host, 2, 10.0)  # the burst of 2 is spent; a token is due in about 5 s
    assert not third.granted and 4.0 < third.wait_s <= 5.0
    assert rl.acquire(host, 2, 10.0, first=third.token) > 4.0  # beyond TEL_RATE_LIMIT_MAX_WAIT: defer
    other = "h:4"
    for _ in range(3):
        cb.record(other, ok=False)
    refused = admit(cb, rl, other, 2, 10.0)
    assert 0 < refused.look.open_ms <= 500 and not refused.look.clean and not refused.granted
    time.sleep(0.55)  # open for 0.5 s: the bucket of `other` is still full, no token was taken while open
    assert admit(cb, rl, other, 2, 10.0).granted and admit(cb, rl, other, 2, 10.0).granted
    assert not admit(cb, rl, other, 2, 10.0).granted
