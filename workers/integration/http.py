"""Outbound HTTP: kept-alive connection pools per target origin, bounded reads, and response classification.

Retryable: connection errors, timeouts, 408, 429 (with `Retry-After`), 502, 503, 504. 401/403 are
AUTHENTICATION_ERROR, other 4xx and 5xx INTEGRATION_ERROR, none of them retried. Connection errors,
timeouts and every 5xx count as failures of the host for the circuit breaker.

Definition-controlled requests go through the egress guard (`egress.py`): a destination that resolves to
a refused address is DESTINATION_NOT_ALLOWED, never retried. Redirects (up to
`TEL_INTEGRATION_MAX_REDIRECTS`, 5) are followed here, hop by hop, so each is checked by the guard again;
a redirect to another origin drops the credentials (`Authorization`, basic auth, cookies and every header
the definition added) and 303 (or 301/302 after a POST) turns the request into a GET without a body.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import certifi
import requests
import requests.utils
import urllib3
from requests.models import PreparedRequest
from urllib3 import BaseHTTPResponse
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from taskexec.core.constants import TaskErrorCode
from taskexec.core.exceptions import DestinationNotAllowed
from taskexec.core.netpolicy import Network
from workers.integration.egress import pool_manager
from workers.integration.failure import CallFailure

E = TaskErrorCode
RETRYABLE_STATUS = {408: E.TIMEOUT_ERROR, 429: E.RATE_LIMIT_ERROR, 502: E.SERVICE_UNAVAILABLE,
                    503: E.SERVICE_UNAVAILABLE, 504: E.SERVICE_UNAVAILABLE}
SNIPPET_CHARS = 300
REDIRECTS = (301, 302, 303, 307, 308)
# kept on a redirect to another origin; every other header (credentials, the definition's own) is dropped
SAFE_HEADERS = frozenset({"accept", "user-agent", "idempotency-key"})
DEFAULT_HEADERS = dict(requests.utils.default_headers())  # User-Agent, Accept-Encoding, Accept, Connection


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
    redirects: int = 0

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
    guarded: bool = True  # False only for the operator's own URL (the Integration Service)


class SessionPool:
    """Kept-alive urllib3 connection pools per origin (guarded or not), sized to the worker's concurrency.

    Requests are built by requests' `PreparedRequest` (URL quoting and IDNA, `params`, JSON and form bodies,
    basic auth, its default headers) and sent straight through urllib3: the `requests.Session` layer on top
    (settings merging, hooks, a cookie jar, the response object) cost about 1 ms of a pool's CPU per call
    here, and its cookie jar carried one task's cookies into the next task's calls to the same host."""

    def __init__(self, pool_size: int = 16, allowed: Sequence[Network] = (), max_redirects: int = 5,
                 ca_certs: str | None = None) -> None:
        self.pool_size = pool_size
        self.allowed = tuple(allowed)
        self.max_redirects = max_redirects
        ca = ca_certs or certifi.where()  # the CA bundle requests uses (no environment: trust_env was off)
        self._managers = {True: pool_manager(self.allowed, pool_size, ca), False: pool_manager(None, pool_size, ca)}

    def send(self, req: Request, timeout: tuple[float, float], max_bytes: int, shown: str) -> Reply:
        """Send (following redirects) and read at most `max_bytes`; `shown` is the masked endpoint used in
        messages."""
        started = time.monotonic()
        try:
            resp, hops = self._follow(req, urllib3.Timeout(connect=timeout[0], read=timeout[1]), shown)
            try:
                content = _read(resp, max_bytes, shown)
            except BaseException:
                resp.close()  # not read to its end: the connection is not reused
                raise
            finally:
                resp.release_conn()
        except DestinationNotAllowed as exc:
            where = shown if not exc.host or exc.host in shown else f"{shown} (redirected to {exc.host})"
            raise CallFailure(E.DESTINATION_NOT_ALLOWED,
                              f"{where}: {exc}; integration calls reach public addresses only "
                              "(TEL_INTEGRATION_ALLOWED_NETWORKS opens ranges)",
                              details={"host": exc.host, "reason": exc.reason}) from None
        except (NewConnectionError, NameResolutionError):  # NewConnectionError is a ConnectTimeoutError too
            raise CallFailure(E.CONNECTION_ERROR, f"cannot connect to {shown}", retryable=True, breaker=True) from None
        except (ConnectTimeoutError, ReadTimeoutError, TimeoutError):
            raise CallFailure(E.TIMEOUT_ERROR, f"timed out calling {shown} (connect {timeout[0]}s, read {timeout[1]}s)",
                              retryable=True, breaker=True) from None
        except (ProtocolError, SSLError, OSError):  # refused, reset, closed mid-answer, TLS handshake failed
            raise CallFailure(E.CONNECTION_ERROR, f"cannot connect to {shown}", retryable=True, breaker=True) from None
        except (requests.RequestException, HTTPError, ValueError) as exc:  # a URL, header or body that cannot be sent
            raise CallFailure(E.INTEGRATION_ERROR, f"request to {shown} failed: {type(exc).__name__}",
                              details={"reason": "BAD_REQUEST"}) from None
        return Reply(resp.status, dict(resp.headers), content, int((time.monotonic() - started) * 1000),
                     redirects=hops)

    def _follow(self, req: Request, timeout: urllib3.Timeout, shown: str) -> tuple[BaseHTTPResponse, int]:
        """The final response (body not read yet) and the number of redirects followed to get it."""
        method, url, headers = req.method, req.url, dict(req.headers)
        params, body, data, auth = req.params or None, req.json, req.data, req.auth
        origin, guarded = _origin(url), req.guarded
        for hop in range(self.max_redirects + 1):
            prepared = PreparedRequest()
            prepared.prepare(method=method, url=url, headers={**DEFAULT_HEADERS, **headers}, params=params,
                             json=body, data=data, auth=auth)
            url = prepared.url or url
            resp = self._managers[guarded].urlopen(prepared.method or method, url, body=prepared.body,
                                                   headers=dict(prepared.headers), redirect=False, retries=False,
                                                   preload_content=False, timeout=timeout)
            location = resp.headers.get("Location")
            if resp.status not in REDIRECTS or not location or self.max_redirects == 0:
                return resp, hop
            resp.close()
            resp.release_conn()
            if hop == self.max_redirects:
                raise CallFailure(E.INTEGRATION_ERROR, f"{shown}: more than {self.max_redirects} redirects",
                                  details={"reason": "TOO_MANY_REDIRECTS"})
            status, url = resp.status, urljoin(url, location)
            if urlsplit(url).scheme.lower() not in ("http", "https"):
                raise CallFailure(E.INTEGRATION_ERROR, f"{shown} redirected to a non-HTTP URL",
                                  details={"reason": "BAD_REDIRECT"})
            params = None  # the new URL carries its own query
            if status == 303 or (status in (301, 302) and method == "POST"):
                method = "GET" if method != "HEAD" else method
                body = data = None
                headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")}
            if _origin(url) != origin:  # another origin: no credentials, and the guard applies again
                headers = {k: v for k, v in headers.items() if k.lower() in SAFE_HEADERS}
                auth = None
                guarded = True
        raise AssertionError("unreachable")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), host_key(url)


def _read(resp: BaseHTTPResponse, max_bytes: int, shown: str) -> bytes:
    chunks, size = [], 0
    for chunk in resp.stream(64 * 1024, decode_content=True):
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
