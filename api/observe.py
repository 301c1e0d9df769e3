"""Request hooks of the router: request id and trace context, the JSON access log, HTTP metrics.

Every request gets a `Trace` (`taskexec.observability.tracing`): the caller's `X-Request-Id` and `traceparent`
when well-formed, fresh ones otherwise. Both are answered in the response headers and written on
every log line of the request. When it ends, one access-log line (logger `taskexec.access`) says who
asked what and how it went, and the route's latency histogram and request counter are updated; the
route label is Flask's rule template (`/api/v1/tasks/<task_id>`), never the raw path, so an id does
not make a new series. Probes and scrapes (`/health`, `/ready`, `/metrics`) are logged at DEBUG.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from taskexec.observability import metrics, tracing
from taskexec.observability.logs import bind_task, clear_task

log = logging.getLogger("taskexec.access")
QUIET_ROUTES = frozenset({"/health", "/ready", "/health/readiness", "/metrics"})
UNMATCHED = "<unmatched>"


def _begin() -> None:
    g.started = time.perf_counter()
    trace = tracing.from_headers(request.headers.get(tracing.REQUEST_ID_HEADER),
                                 request.headers.get(tracing.TRACEPARENT_HEADER))
    g.trace = trace
    tracing.set_current(trace)
    bind_task(**trace.fields())


def _finish(response: Response) -> Response:
    trace: tracing.Trace | None = g.get("trace")
    if trace is not None:
        response.headers[tracing.REQUEST_ID_HEADER] = trace.request_id
        response.headers[tracing.TRACEPARENT_HEADER] = trace.traceparent
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule is not None else UNMATCHED
    metrics.child(metrics.HTTP_REQUESTS, method=request.method, route=route, status=str(response.status_code)).inc()
    metrics.child(metrics.HTTP_REQUEST_TIME, method=request.method, route=route).observe(elapsed)
    principal = g.get("principal")
    log.log(logging.DEBUG if route in QUIET_ROUTES else logging.INFO, "request", extra={
        "method": request.method, "route": route, "path": request.path, "status": response.status_code,
        "durationMs": round(elapsed * 1000, 1), "principal": principal.sub if principal is not None else None,
        "remoteAddr": request.remote_addr, **(trace.fields() if trace is not None else {}),
    })
    return response


def _end(_: BaseException | None) -> None:
    """gthread workers reuse threads: nothing of this request may stay in their context."""
    tracing.set_current(None)
    clear_task()


def install(app: Flask) -> None:
    """Register the hooks (first, so every other hook and handler runs inside the request's trace)."""
    app.before_request_funcs.setdefault(None, []).insert(0, _begin)
    app.after_request(_finish)
    app.teardown_request(_end)
