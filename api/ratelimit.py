"""Per-principal API rate limits: a `before_request` hook counts, an `after_request` hook reports.

Every `/api/v1` request is counted in a fixed window per principal (JWT `sub` or API key; an
unauthenticated request per client address) and class: the standard class (`TEL_API_RATE_LIMIT`,
100/min) or, for routes declared with :func:`bulk`, the bulk class (`TEL_API_BULK_RATE_LIMIT`, 20/min).
The counters live in Redis (`TEL_REDIS_URL`, else the broker when it is Redis), so every router process
shares them: one pipelined `INCR` + `EXPIRE` per request. Every response carries `X-RateLimit-Limit`,
`X-RateLimit-Remaining` and `X-RateLimit-Reset` (Unix time the window ends); over the limit the answer
is 429 `RATE_LIMITED` with `Retry-After`. Principals holding a role of `TEL_API_RATE_LIMIT_EXEMPT_ROLES`
(`admin`, `service`: the orchestrator and the pools) are counted and see the headers, but are never
refused. Without Redis (an AMQP broker and no `TEL_REDIS_URL`) each router process counts on its own
(a warning at start-up); with Redis unreachable, requests pass uncounted (fail open, logged) and Redis
is left alone for a few seconds so no request waits on it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from flask import Flask, Response, current_app, g, request

from api.security import try_authenticate
from taskexec.core.config import Settings
from taskexec.core.constants import API_PREFIX
from taskexec.core.exceptions import RateLimited
from taskexec.observability import metrics

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
STANDARD, BULK = "standard", "bulk"
EXTENSION = "taskexec.ratelimit"
REDIS_TIMEOUT_S = 0.5
REDIS_BACKOFF_S = 5.0  # after a Redis error, requests pass uncounted this long before Redis is tried again
LOCAL_MAX_KEYS = 10_000


def bulk(view: F) -> F:
    """Declare a route a bulk operation: it counts against the bulk class (TEL_API_BULK_RATE_LIMIT)."""
    view.rate_class = BULK  # type: ignore[attr-defined]
    return view


@dataclass(frozen=True)
class Quota:
    """One principal's standing in the current window, as reported in the headers."""

    limit: int
    window_s: float
    remaining: int
    reset: int  # Unix time the window ends
    retry_after: int  # seconds until then (at least 1)
    exceeded: bool


class FixedWindows:
    """Request counts per (key, window): in Redis, shared by every router process, or in this process."""

    def __init__(self, redis_url: str | None, prefix: str) -> None:
        self.prefix = prefix
        self.client = (redis.Redis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S,
                                            socket_connect_timeout=REDIS_TIMEOUT_S, health_check_interval=30)
                       if redis_url else None)
        self._down_until = 0.0
        self._local: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def count(self, key: str, window_s: float, now: float) -> int | None:
        """This request's number in the window holding `now`; None when the shared store is unavailable."""
        index = int(now // window_s)
        if self.client is None:
            return self._count_locally(key, index)
        if time.monotonic() < self._down_until:
            return None
        name = f"{self.prefix}:{key}:{index}"
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.incr(name)
            pipe.expire(name, int(math.ceil(window_s)) + 5)
            n, _ = pipe.execute()
        except redis.RedisError as exc:
            self._down_until = time.monotonic() + REDIS_BACKOFF_S
            log.warning("API rate limits: Redis unavailable, requests pass uncounted for %.0f s", REDIS_BACKOFF_S,
                        extra={"error": str(exc)})
            return None
        return int(n)

    def _count_locally(self, key: str, index: int) -> int:
        with self._lock:
            if len(self._local) >= LOCAL_MAX_KEYS:
                self._local = {k: v for k, v in self._local.items() if k[1] >= index}
            n = self._local.get((key, index), 0) + 1
            self._local[(key, index)] = n
            return n


class RateLimits:
    """The router process's limiter (one per app)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.exempt_roles = settings.rate_limit_exempt_roles
        url = settings.state_redis_url
        if url is None and (settings.api_rate() or settings.api_rate(bulk=True)):
            log.warning("no Redis for API rate limits (AMQP broker, TEL_REDIS_URL unset): "
                        "each router process counts on its own")
        # scoped to the deployment (its automated queue name, as the sandbox reaper is), so stacks may share a Redis
        self.windows = FixedWindows(url, f"tel:ratelimit:{settings.queue_automated}")

    def check(self, who: str, roles: tuple[str, ...], rate_class: str, now: float | None = None) -> Quota | None:
        """Count one request of `who`; None when its class has no limit or the count is unavailable."""
        rate = self.settings.api_rate(bulk=rate_class == BULK)
        if rate is None:
            return None
        limit, window = rate
        now = time.time() if now is None else now
        n = self.windows.count(f"{rate_class}:{who}", window, now)
        if n is None:
            return None
        reset = (math.floor(now / window) + 1) * window
        exempt = bool(self.exempt_roles.intersection(roles))
        return Quota(limit=limit, window_s=window, remaining=max(0, limit - n), reset=math.ceil(reset),
                     retry_after=max(1, math.ceil(reset - now)), exceeded=n > limit and not exempt)


def install(app: Flask, settings: Settings) -> None:
    app.extensions[EXTENSION] = RateLimits(settings)
    app.before_request(limit_request)
    app.after_request(report_quota)


def is_api(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def limit_request() -> None:
    """`before_request`: count the request; 429 when its principal is over the limit."""
    if not is_api(request.path):
        return
    principal = try_authenticate()
    who = f"{principal.kind}:{principal.sub}" if principal else f"ip:{request.remote_addr or '?'}"
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    rate_class = getattr(view, "rate_class", STANDARD)
    quota = current_app.extensions[EXTENSION].check(who, principal.roles if principal else (), rate_class)
    g.rate_quota = quota
    if quota is not None and quota.exceeded:
        g.retry_after = quota.retry_after
        metrics.child(metrics.API_RATE_LIMITED, rate_class=rate_class).inc()
        raise RateLimited(
            f"rate limit exceeded: {quota.limit} requests per {quota.window_s:g} s ({rate_class}); "
            f"retry in {quota.retry_after} s",
            details={"limit": quota.limit, "windowSeconds": quota.window_s, "class": rate_class,
                     "retryAfterSeconds": quota.retry_after})


def report_quota(response: Response) -> Response:
    """`after_request`: the X-RateLimit-* headers, and Retry-After on a 429 or a shedding 503."""
    quota: Quota | None = g.get("rate_quota")
    if quota is not None:
        response.headers["X-RateLimit-Limit"] = str(quota.limit)
        response.headers["X-RateLimit-Remaining"] = str(quota.remaining)
        response.headers["X-RateLimit-Reset"] = str(quota.reset)
    retry_after = g.get("retry_after")
    if retry_after and response.status_code in (429, 503):
        response.headers["Retry-After"] = str(retry_after)
    return response
