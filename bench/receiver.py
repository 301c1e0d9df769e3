"""The benchmarks' orchestrator: a real HTTP server on 127.0.0.1 that receives and counts task events.

Started as its own process (``python bench/receiver.py``; it prints ``receiver listening on URL``) so
that it shares no interpreter lock with the benchmark's clients. Like ``tests/support.py``'s Receiver it
stands in for the workflow orchestrator, a third party we cannot run here. It answers every POST with
200 and keeps, per task, the event types in arrival order (a repeated event ``id`` is counted as a
duplicate and not stored again). ``GET /stats`` answers::

    {"events": n, "duplicates": d, "tasks": t, "terminal": k, "disordered": [task ids, at most 20]}

(with ``?terminal=N&wait=S``: once ``terminal`` reaches N, or after S seconds), and ``GET /tasks/<id>``
the event types of one task so far and when each arrived (``time.time()``): ``{"types": [...], "at":
[...]}`` (with ``?wait=S``: once the task's terminal event is in, or after S seconds). Both waits are
long polls: a benchmark learns at once that its round or task is done, without polling the receiver.

``terminal`` counts tasks with a terminal event (completed, failed, cancelled, timed_out): a benchmark
is done when it reaches the number of tasks submitted. A task is *disordered* when its events do not
start with ``task.instance.created``, or an event arrives after its terminal one.

It is one asyncio event loop with a Protocol per connection, parsing just what an HTTP/1.1 client with
Content-Length bodies sends, because it shares the machine's two cores with the stack being measured:
``http.server`` (an email parser per request, a thread per connection) took about 180 µs of CPU an
event, this about 100 µs (8 keep-alive clients, 12,000 events, the same machine and moment).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

TERMINAL = frozenset({"task.instance.completed", "task.instance.failed", "task.instance.cancelled",
                      "task.instance.timed_out"})
CREATED = "task.instance.created"
MAX_HEAD = 64 * 1024


class Counts:
    """What arrived, per task (one event loop: no locks); waiters are woken by each terminal event."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.types: dict[str, list[str]] = {}
        self.at: dict[str, list[float]] = {}
        self.events = self.duplicates = self.terminal = 0
        self.disordered: set[str] = set()
        self.changed = asyncio.Event()

    def add(self, event: dict[str, Any]) -> None:
        task_id = str((event.get("data") or {}).get("taskId"))
        kind = str(event.get("type"))
        if event.get("id") in self.seen:
            self.duplicates += 1
            return
        self.seen.add(str(event.get("id")))
        self.events += 1
        types = self.types.setdefault(task_id, [])
        if (not types and kind != CREATED) or (types and types[-1] in TERMINAL):
            self.disordered.add(task_id)
        types.append(kind)
        self.at.setdefault(task_id, []).append(time.time())
        if kind in TERMINAL:
            self.terminal += 1
            self.changed.set()
            self.changed = asyncio.Event()

    async def until(self, done: Any, wait: float) -> None:
        """Return when `done()` holds or `wait` seconds have passed."""
        deadline = time.monotonic() + wait
        while not done() and (left := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return

    async def of(self, task_id: str, wait: float = 0.0) -> dict[str, Any]:
        await self.until(lambda: any(t in TERMINAL for t in self.types.get(task_id, [])), wait)
        return {"types": list(self.types.get(task_id, [])), "at": list(self.at.get(task_id, []))}

    async def stats(self, terminal: int = 0, wait: float = 0.0) -> dict[str, Any]:
        await self.until(lambda: self.terminal >= terminal, wait)
        return {"events": self.events, "duplicates": self.duplicates, "tasks": len(self.types),
                "terminal": self.terminal, "disordered": sorted(self.disordered)[:20]}


def _response(status: int, body: bytes = b"") -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required"}.get(status, "")
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
    if body:
        head += "Content-Type: application/json\r\n"
    return head.encode() + b"\r\n" + body


async def _get(counts: Counts, target: str) -> bytes:
    url = urlsplit(target)
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    wait = float(query.get("wait", 0))
    if url.path.startswith("/tasks/"):
        return _response(200, json.dumps(await counts.of(url.path[len("/tasks/"):], wait)).encode())
    return _response(200, json.dumps(await counts.stats(int(query.get("terminal", 0)), wait)).encode())


class Connection(asyncio.Protocol):
    """One keep-alive connection: requests parsed from the bytes as they come (Content-Length bodies
    only), answered in order; a GET may wait (a long poll), and what follows it waits behind it."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.pending: asyncio.Task[None] | None = None  # a GET being answered: parsing waits for it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.pending is None:
            self._parse()

    def _parse(self) -> None:
        assert self.transport is not None
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self.transport.close()
                return
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            method, target = (lines[0].split(" ", 2) + ["", ""])[:2]
            headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self.transport.write(_response(411))
                self.transport.close()
                return
            size = int(headers.get("content-length") or 0)
            if len(self.buffer) < end + 4 + size:
                return
            body, self.buffer = self.buffer[end + 4:end + 4 + size], self.buffer[end + 4 + size:]
            if method == "GET":
                self.pending = asyncio.get_running_loop().create_task(self._answer(target))
                return
            if method != "POST":
                self.transport.write(_response(404))
                continue
            try:
                event = json.loads(body or b"null")
            except ValueError:
                self.transport.write(_response(400))
                continue
            if isinstance(event, dict):
                self.counts.add(event)
            self.transport.write(_response(200))

    async def _answer(self, target: str) -> None:
        answer = await _get(self.counts, target)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)
        self.pending = None
        self._parse()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.pending is not None:
            self.pending.cancel()


async def _serve(host: str, port: int) -> None:
    counts = Counts()
    server = await asyncio.get_running_loop().create_server(lambda: Connection(counts), host, port)
    print(f"receiver listening on http://{host}:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def serve(host: str = "127.0.0.1", port: int = 0) -> None:
    asyncio.run(_serve(host, port))


if __name__ == "__main__":
    serve(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
