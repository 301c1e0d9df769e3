"""The kept-alive HTTP client of the hot paths, and the coalescing of a pool's reports."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from taskexec.clients.client import _Batcher
from taskexec.clients.keepalive import KeepAlive
from taskexec.contract.protocol import LostReport


class Server:
    """A real HTTP/1.1 server on 127.0.0.1 recording the client port of each request; `drop_idle` makes it
    close a connection right after answering (without saying so), as a server's keep-alive timeout does."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.drop_idle = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.ports.append(self.client_address[1])
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if outer.drop_idle:
                    self.close_connection = True

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/x"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def test_one_connection_serves_many_requests(server: Server) -> None:
    client = KeepAlive()
    for i in range(5):
        reply = client.request("POST", server.url, f"body-{i}".encode(), {"Content-Type": "text/plain"})
        assert (reply.status, reply.body) == (200, f"body-{i}".encode())
    assert len(set(server.ports)) == 1
    client.close()


def test_a_connection_the_server_closed_is_replaced(server: Server) -> None:
    client = KeepAlive()
    server.drop_idle = True
    for _ in range(3):
        assert client.request("POST", server.url, b"x").status == 200
        time.sleep(0.05)  # the server's close reaches the idle connection
    assert len(set(server.ports)) == 3  # each request on a fresh connection, none failed
    client.close()


def test_proxied_urls_are_left_to_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert not KeepAlive().usable("http://orchestrator.example:8080/api")
    monkeypatch.setenv("NO_PROXY", "orchestrator.example")
    assert KeepAlive().usable("http://orchestrator.example:8080/api")


def test_reports_of_many_threads_share_calls_and_keep_their_answers() -> None:
    release = threading.Event()
    calls: list[list[str]] = []
    traces: list[dict[str, str] | None] = []

    def send(reports: list[Any], extra: dict[str, str] | None) -> list[tuple[int, Any]]:
        calls.append([r.task_id for r in reports])
        traces.append(extra)
        release.wait(10)  # the calls in flight (two senders) block while the other reports queue up
        return [(200, {"id": r.task_id}) for r in reports]

    batcher = _Batcher(send)
    answers: dict[str, Any] = {}

    def call(task_id: str) -> None:
        answers[task_id] = batcher.call(LostReport(task_id=task_id), {"X-Request-Id": f"req-{task_id}"})

    first = threading.Thread(target=call, args=("t0",))
    first.start()
    while not calls:
        time.sleep(0.01)
    others = [threading.Thread(target=call, args=(f"t{i}",)) for i in range(1, 6)]
    for t in others:
        t.start()
    time.sleep(0.2)  # both senders busy, the other reports queued: they leave in one call once released
    release.set()
    for t in [first, *others]:
        t.join(10)
    assert calls[0] == ["t0"] and sorted(sum(calls[1:], [])) == ["t1", "t2", "t3", "t4", "t5"]
    assert len(calls) <= 3  # five reports in at most two calls, not five
    assert all(answers[f"t{i}"] == (200, {"id": f"t{i}"}) for i in range(6))
    # a call carrying one task's report carries that task's request id; one carrying several, none
    assert traces[0] == {"X-Request-Id": "req-t0"}
    assert all(t is None for c, t in zip(calls[1:], traces[1:], strict=True) if len(c) > 1)
