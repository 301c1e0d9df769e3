"""Request ids and W3C trace context: one id from the client's request to every call made for it.

The router takes `X-Request-Id` and `traceparent` from a request (or makes new ones), answers with
them, writes them on every log line of that request, and stores them with a task it creates. The
pools read them back from the job and send them on every call they make for that task (to the
router, to integration targets), so one grep or one trace follows a task across processes.
A value that is not well-formed is replaced, never echoed (it would land in logs and headers).
"""

from __future__ import annotations

import contextvars
import re
import secrets
from dataclasses import dataclass

REQUEST_ID_HEADER = "X-Request-Id"
TRACEPARENT_HEADER = "traceparent"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# version 00: trace id (32 hex, not all zero), parent span id (16 hex, not all zero), flags (2 hex)
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@dataclass(frozen=True)
class Trace:
    """The request id and W3C trace context of one unit of work (a request, or a task attempt)."""

    request_id: str
    trace_id: str
    span_id: str
    flags: str = "01"

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> Trace:
        """The same request and trace, a new span (a call this unit of work makes)."""
        return Trace(self.request_id, self.trace_id, secrets.token_hex(8), self.flags)

    def headers(self) -> dict[str, str]:
        """Headers for an outgoing call made on behalf of this unit of work."""
        return {REQUEST_ID_HEADER: self.request_id, TRACEPARENT_HEADER: self.child().traceparent}

    def fields(self) -> dict[str, str]:
        """Log fields."""
        return {"requestId": self.request_id, "traceId": self.trace_id}


def new_trace() -> Trace:
    return Trace(secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(8))


def from_headers(request_id: str | None, traceparent: str | None) -> Trace:
    """The caller's ids when well-formed, fresh ones otherwise (each part on its own)."""
    fresh = new_trace()
    rid = request_id if request_id and _REQUEST_ID.fullmatch(request_id) else fresh.request_id
    m = _TRACEPARENT.fullmatch(traceparent or "")
    if m and set(m.group(1)) != {"0"} and set(m.group(2)) != {"0"}:
        return Trace(rid, m.group(1), secrets.token_hex(8), m.group(3))
    return Trace(rid, fresh.trace_id, fresh.span_id)


def for_task(request_id: str | None, traceparent: str | None) -> Trace:
    """An attempt's trace: the ids its submitting request stored (checked again), a new span."""
    return from_headers(request_id, traceparent)


_current: contextvars.ContextVar[Trace | None] = contextvars.ContextVar("taskexec_trace", default=None)


def set_current(trace: Trace | None) -> None:
    _current.set(trace)


def current() -> Trace | None:
    return _current.get()


def outgoing_headers() -> dict[str, str]:
    """Headers for a call made now, in the current request or task (none outside one)."""
    trace = _current.get()
    return trace.headers() if trace else {}
