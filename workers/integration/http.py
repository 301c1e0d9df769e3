"""Outbound HTTP: one pooled `requests.Session` per target host, bounded reads, and response classification.

Retryable: connection errors, timeouts, 408, 429 (with `Retry-After`), 502, 503, 504. 401/403 are
AUTHENTICATION_ERROR, other 4xx and 5xx INTEGRATION_ERROR, none of them retried. Connection errors,
timeouts and every 5xx count as failures of the host for the circuit breaker.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from taskexec.constants import TaskErrorCode
from workers.integration.failure import CallFailure

E = TaskErrorCode
RETRYABLE_STATUS = {408: E.TIMEOUT_ERROR, 429: E.RATE_LIMIT_ERROR, 502: E.SERVICE_UNAVAILABLE,
                    503: E.SERVICE_UNAVAILABLE, 504: E.SERVICE_UNAVAILABLE}
SNIPPET_CHARS = 300


def host_key(url: str) -> str:
    """`host:port` (lower-case, default port by scheme): the unit of breakers, rate limits and pools."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{(parts.hostname or '').lower()}:{port}"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    content: bytes
    elapsed_ms: int

    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    data: dict[str, str] | None = None
    auth: tuple[str, str] | None = None


class SessionPool:
    """A keep-alive session per host, sized to the worker's concurrency."""

    def __init__(self, pool_size: int = 16) -> None:
        self.pool_size = pool_size
        self._sessions: dict[str, requests.Session] = {}
        self._lock = threading.Lock()

    def session(self, host: str) -> requests.Session:
        with self._lock:
            sess = self._sessions.get(host)
            if sess is None:
                sess = requests.Session()
                sess.trust_env = False  # no proxies or .netrc credentials picked up from the environment
                adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.pool_size, max_retries=0)
                sess.mount("http://", adapter)
                sess.mount("https://", adapter)
                self._sessions[host] = sess
            return sess

    def send(self, req: Request, timeout: tuple[float, float], max_bytes: int, shown: str) -> Reply:
        """Send and read at most `max_bytes`; `shown` is the masked endpoint used in messages."""
        started = time.monotonic()
        sess = self.session(host_key(req.url))
        try:
            resp = sess.request(req.method, req.url, headers=req.headers, params=req.params or None,
                                json=req.json, data=req.data, auth=req.auth, timeout=timeout, stream=True,
                                allow_redirects=False)
            try:
                content = _read(resp, max_bytes, shown)
            finally:
                resp.close()
        except requests.Timeout:
            raise CallFailure(E.TIMEOUT_ERROR, f"timed out calling {shown} (connect {timeout[0]}s, read {timeout[1]}s)",
                              retryable=True, breaker=True) from None
        except requests.ConnectionError:
            raise CallFailure(E.CONNECTION_ERROR, f"cannot connect to {shown}", retryable=True, breaker=True) from None
        except requests.RequestException as exc:
            raise CallFailure(E.INTEGRATION_ERROR, f"request to {shown} failed: {type(exc).__name__}",
                              details={"reason": "BAD_REQUEST"}) from None
        return Reply(resp.status_code, dict(resp.headers), content, int((time.monotonic() - started) * 1000))


def _read(resp: requests.Response, max_bytes: int, shown: str) -> bytes:
    chunks, size = [], 0
    for chunk in resp.iter_content(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise CallFailure(E.INTEGRATION_ERROR, f"response of {shown} is larger than {max_bytes} bytes",
                              details={"reason": "RESPONSE_TOO_LARGE"})
        chunks.append(chunk)
    return b"".join(chunks)


def retry_after_ms(value: str | None, now: float | None = None) -> int | None:
    """`Retry-After` as milliseconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value) * 1000
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0, int((when - (now if now is not None else time.time())) * 1000))


def classify(reply: Reply, shown: str, snippet: str) -> CallFailure | None:
    """The failure a reply stands for, or None for a 2xx/3xx."""
    status = reply.status
    if status < 400:
        return None
    details: dict[str, Any] = {"httpStatus": status}
    if snippet:
        details["responseSnippet"] = snippet[:SNIPPET_CHARS]
    if status in (401, 403):
        return CallFailure(E.AUTHENTICATION_ERROR, f"{shown} answered {status}: credentials refused", details=details)
    if status in RETRYABLE_STATUS:
        wait = retry_after_ms(_header(reply.headers, "Retry-After")) if status in (429, 503) else None
        return CallFailure(RETRYABLE_STATUS[status], f"{shown} answered {status}", retryable=True,
                           breaker=status >= 500, details=details, retry_after_ms=wait)
    return CallFailure(E.INTEGRATION_ERROR, f"{shown} answered {status}", breaker=status >= 500, details=details)


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None
