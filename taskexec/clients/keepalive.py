"""Keep-alive HTTP/1.1 connections for the two hottest senders: the outbox and the pools' router client.

Each task makes about five HTTP requests inside taskexec (its start and finish reports, three events),
so their client cost matters: a POST through ``requests.Session`` costs about 1.4 ms of CPU on the
benchmark machine, one through ``http.client`` on a kept-alive connection about 0.3 ms (measured in
bench/README.md). `KeepAlive` keeps idle ``http.client`` connections per origin, checks that an idle
one was not closed by the server before reusing it, and sends a request again once on a fresh
connection when a reused one turns out dead before any answer.

It takes the same environment as ``requests`` does: the CA bundle (``REQUESTS_CA_BUNDLE``,
``CURL_CA_BUNDLE``, else certifi's), and for a URL that the environment sends through a proxy
(``HTTP(S)_PROXY`` without a matching ``NO_PROXY``) `usable()` is False and callers use ``requests``.
"""

from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
import requests.utils

_RETRYABLE = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError,
              BrokenPipeError, ConnectionAbortedError)
MAX_IDLE_PER_ORIGIN = 16


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int
    context: ssl.SSLContext | None


class KeepAlive:
    """A small pool of kept-alive connections per origin; thread-safe (a connection serves one thread)."""

    def __init__(self, connect_timeout: float = 3.05, read_timeout: float = 30.0, max_body: int = 64 << 20) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_body = max_body
        self._lock = threading.Lock()
        self._origins: dict[str, _Origin | None] = {}  # scheme://netloc -> origin, None when proxied
        self._idle: dict[_Origin, list[http.client.HTTPConnection]] = {}

    def usable(self, url: str) -> bool:
        """False when the environment routes `url` through a proxy (send it with requests instead)."""
        return self._origin(url) is not None

    def request(self, method: str, url: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        """Send one request and read the whole answer; raises OSError / http.client errors on failure."""
        origin = self._origin(url)
        if origin is None:
            raise ValueError(f"{url} goes through a proxy: not for KeepAlive")
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = {"Connection": "keep-alive", **(headers or {})}
        conn, reused = self._take(origin)
        for fresh_try in (False, True):
            try:
                conn.request(method, target, body=body, headers=head)
                resp = conn.getresponse()
                data = resp.read(self.max_body + 1)
            except _RETRYABLE:
                conn.close()
                if reused and not fresh_try:  # the server had closed it: once more on a new connection
                    conn, reused = self._connect(origin), False
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            if len(data) > self.max_body or resp.will_close:
                conn.close()
                if len(data) > self.max_body:
                    raise http.client.HTTPException(f"answer larger than {self.max_body} bytes")
            else:
                self._give_back(origin, conn)
            return Reply(resp.status, data, resp.getheader("Content-Type") or "")
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    # -- connections -------------------------------------------------------------------------
    def _origin(self, url: str) -> _Origin | None:
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            if key in self._origins:
                return self._origins[key]
        origin: _Origin | None = None
        proxies = requests.utils.get_environ_proxies(url)
        if parts.scheme in ("http", "https") and parts.hostname and not proxies.get(parts.scheme) \
                and not proxies.get("all"):
            context = _tls_context(url) if parts.scheme == "https" else None
            origin = _Origin(parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                             context)
        with self._lock:
            self._origins[key] = origin
        return origin

    def _take(self, origin: _Origin) -> tuple[http.client.HTTPConnection, bool]:
        while True:
            with self._lock:
                conns = self._idle.get(origin)
                conn = conns.pop() if conns else None
            if conn is None:
                return self._connect(origin), False
            if _alive(conn):
                return conn, True
            conn.close()

    def _give_back(self, origin: _Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            conns = self._idle.setdefault(origin, [])
            if len(conns) < MAX_IDLE_PER_ORIGIN:
                conns.append(conn)
                return
        conn.close()

    def _connect(self, origin: _Origin) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if origin.scheme == "https":
            conn = http.client.HTTPSConnection(origin.host, origin.port, timeout=self.connect_timeout,
                                               context=origin.context)
        else:
            conn = http.client.HTTPConnection(origin.host, origin.port, timeout=self.connect_timeout)
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request is one write; answers at once
        conn.sock.settimeout(self.read_timeout)
        return conn


def _alive(conn: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection is readable only when the server closed it (or broke protocol)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def _tls_context(url: str) -> ssl.SSLContext:
    """Verification as requests does it: the CA bundle from the environment, else certifi's."""
    with requests.Session() as session:
        verify = session.merge_environment_settings(url, {}, None, None, None)["verify"]
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    where = verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH
    if os.path.isdir(where):
        return ssl.create_default_context(capath=where)
    return ssl.create_default_context(cafile=where)
