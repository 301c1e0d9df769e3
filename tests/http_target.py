"""Real HTTP servers on 127.0.0.1 for the integration pool's tests.

`Target` stands in for an external service: each path has a handler the test can change (fail,
stall, rate-limit, require auth, echo), and every request is recorded with its arrival time.
`VaultStub` is a stand-in for HashiCorp Vault's KV version 2 HTTP API (we cannot run Vault here): it
answers `GET /v1/<mount>/data/<path>` for a known `X-Vault-Token` exactly as Vault shapes the reply.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    """One request as the target received it."""

    at: float  # time.time() on arrival
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=dict)  # JSON-encoded unless bytes/str
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Handler = Callable[[Seen], Reply]


def json_reply(body: Any, status: int = 200, **headers: str) -> Reply:
    return Reply(status, body, dict(headers))


def sequence(*replies: Reply) -> Handler:
    """Answer with each reply in turn, then keep repeating the last one."""
    queue = list(replies)
    lock = threading.Lock()

    def handle(_: Seen) -> Reply:
        with lock:
            return queue.pop(0) if len(queue) > 1 else queue[0]

    return handle


def require_header(name: str, expected: Callable[[], str], then: Handler) -> Handler:
    """401 unless header `name` equals `expected()`."""
    def handle(seen: Seen) -> Reply:
        if seen.headers.get(name.lower()) != expected():
            return Reply(401, {"error": "unauthorized"})
        return then(seen)

    return handle


class _Server:
    def __init__(self, host: str = "127.0.0.1") -> None:
        outer = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes: without TCP_NODELAY the body waits for the client's delayed
            # ACK of the headers (40 ms on Linux), which would make every call to a target look that slow.
            disable_nagle_algorithm = True

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                seen = Seen(time.time(), self.command, parts.path, parse_qs(parts.query),
                            {k.lower(): v for k, v in self.headers.items()}, body)
                reply = outer.dispatch(seen)
                if reply.delay:
                    time.sleep(reply.delay)
                if isinstance(reply.body, bytes | str):
                    data = reply.body.encode() if isinstance(reply.body, str) else reply.body
                    ctype = reply.headers.get("Content-Type", "text/plain")
                else:
                    data, ctype = json.dumps(reply.body).encode(), "application/json"
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        if key.lower() != "content-type":
                            self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), RequestHandler)  # always an address in 127.0.0.0/8
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://{host}:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def dispatch(self, seen: Seen) -> Reply:
        raise NotImplementedError

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Target(_Server):
    """An external service under the test's control: `target.on(path, handler)`; `target.seen` records calls."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Handler] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        super().__init__(host)

    def on(self, path: str, handler: Handler | Reply) -> str:
        if callable(handler):
            self.routes[path] = handler
        else:
            reply: Reply = handler
            self.routes[path] = lambda _seen: reply
        return self.url + path

    def dispatch(self, seen: Seen) -> Reply:
        with self._lock:
            self.seen.append(seen)
        handler = self.routes.get(seen.path)
        return handler(seen) if handler else Reply(404, {"error": "no such route"})

    def calls(self, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path == path]


class VaultStub(_Server):
    """Stand-in for Vault's KV v2 API: `GET /v1/<mount>/data/<path>` with `X-Vault-Token`."""

    def __init__(self, token: str, secrets: dict[str, dict[str, str]], mount: str = "secret") -> None:
        self.token = token
        self.secrets = secrets
        self.mount = mount
        self.reads: list[str] = []
        super().__init__()

    def dispatch(self, seen: Seen) -> Reply:
        if seen.headers.get("x-vault-token") != self.token:
            return Reply(403, {"errors": ["permission denied"]})
        prefix = f"/v1/{self.mount}/data/"
        if seen.method != "GET" or not seen.path.startswith(prefix):
            return Reply(404, {"errors": []})
        path = seen.path[len(prefix):]
        self.reads.append(path)
        if path not in self.secrets:
            return Reply(404, {"errors": []})
        meta = {"created_time": "2026-01-01T00:00:00Z", "custom_metadata": None, "deletion_time": "",
                "destroyed": False, "version": 1}
        return Reply(200, {"request_id": "stub", "lease_id": "", "renewable": False, "lease_duration": 0,
                           "data": {"data": self.secrets[path], "metadata": meta},
                           "wrap_info": None, "warnings": None, "auth": None})


def max_in_window(times: list[float], window: float) -> int:
    """The largest number of `times` inside any half-open sliding window of `window` seconds."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best
