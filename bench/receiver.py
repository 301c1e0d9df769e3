"""The benchmarks' orchestrator: a real HTTP server on 127.0.0.1 that receives and counts task events.

Started as its own process (``python bench/receiver.py``; it prints ``receiver listening on URL``) so
that it shares no interpreter lock with the benchmark's clients. Like ``tests/support.py``'s Receiver it
stands in for the workflow orchestrator, a third party we cannot run here. It answers every POST with
200 and keeps, per task, the event types in arrival order (a repeated event ``id`` is counted as a
duplicate and not stored again). ``GET /stats`` answers::

    {"events": n, "duplicates": d, "tasks": t, "terminal": k, "disordered": [task ids, at most 20]}

and ``GET /tasks/<id>`` the event types of one task so far and when each arrived (``time.time()``):
``{"types": [...], "at": [...]}``; with ``?wait=S`` it first waits up to S seconds for the task's terminal
event (a long poll: the benchmark learns of it at once, without polling the receiver busy).

``terminal`` counts tasks with a terminal event (completed, failed, cancelled, timed_out): a benchmark
is done when it reaches the number of tasks submitted. A task is *disordered* when its events do not
start with ``task.instance.created``, or an event arrives after its terminal one.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TERMINAL = frozenset({"task.instance.completed", "task.instance.failed", "task.instance.cancelled",
                      "task.instance.timed_out"})
CREATED = "task.instance.created"


class Counts:
    """What arrived, per task; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.seen: set[str] = set()
        self.types: dict[str, list[str]] = {}
        self.at: dict[str, list[float]] = {}
        self.events = self.duplicates = self.terminal = 0
        self.disordered: set[str] = set()

    def add(self, event: dict[str, Any]) -> None:
        task_id = str((event.get("data") or {}).get("taskId"))
        kind = str(event.get("type"))
        with self.lock:
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
                self.arrived.notify_all()

    def of(self, task_id: str, wait: float = 0.0) -> dict[str, Any]:
        with self.lock:
            self.arrived.wait_for(lambda: any(t in TERMINAL for t in self.types.get(task_id, [])), wait)
            return {"types": list(self.types.get(task_id, [])), "at": list(self.at.get(task_id, []))}

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"events": self.events, "duplicates": self.duplicates, "tasks": len(self.types),
                    "terminal": self.terminal, "disordered": sorted(self.disordered)[:20]}


def serve(host: str = "127.0.0.1", port: int = 0) -> None:
    counts = Counts()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the router's outbox reuses its connections
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall between them

        def _reply(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if body:
                self.send_header("Content-Type", "application/json")
            self.end_headers()
            if body:
                self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                event = json.loads(body or b"null")
            except ValueError:
                self._reply(400)
                return
            if isinstance(event, dict):
                counts.add(event)
            self._reply(200)

        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/tasks/"):
                path, _, query = self.path[len("/tasks/"):].partition("?")
                wait = float(query.split("wait=", 1)[1]) if "wait=" in query else 0.0
                self._reply(200, json.dumps(counts.of(path, wait)).encode())
            else:
                self._reply(200, json.dumps(counts.stats()).encode())

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    print(f"receiver listening on http://{host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
