"""Liveness and readiness of a worker process, served next to `/metrics` on `TEL_METRICS_PORT`.

- `GET /health` (liveness): 200 while the consumer's event loop turns. A consumer bootstep
  (`ConsumerHeartbeat`) stamps a heartbeat from the consumer's timer every `HEARTBEAT_INTERVAL_S`;
  while the broker connection is up, a heartbeat older than `TEL_HEALTH_STALE_SECONDS` means the
  loop is stuck: 503. While (re)connecting to the broker the process is alive and retrying
  (restarting it would kill running tasks and fix nothing): 200 with `"consumer": "connecting"`.
  503 as well once the worker is shutting down.
- `GET /ready` (readiness): 200 once `worker_ready` fired, the broker connection is up and the
  heartbeat is fresh; 503 while starting, disconnected, or shutting down (draining).
- Both answer 503 while the stall watchdog (`workers.stall`) sees the consumer take no message
  although its queue has work and the pool has a free slot (`TEL_HEALTH_STALL_SECONDS`): a loop
  that turns without reading from the broker is as dead as one that does not turn.

Bodies are JSON: `{"status": "UP"|"DOWN", "reason": ..., ...}`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from celery import bootsteps, signals

from workers import stall
from workers.base import shutting_down
from workers.stall import StallWatch

HEARTBEAT_INTERVAL_S = 2.0
Check = Callable[[], tuple[int, dict[str, Any]]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_REASONS = {200: "200 OK", 503: "503 Service Unavailable"}


class HealthState:
    """What the probes report; updated by Celery signals and the consumer bootstep (thread-safe enough:
    single assignments of immutable values)."""

    def __init__(self, stale_after_s: float = 30.0, stall_after_s: float = 60.0) -> None:
        self.stale_after_s = stale_after_s
        self.stall = StallWatch(stall_after_s)
        self.ready = False        # worker_ready fired
        self.connected = False    # the consumer's broker connection is up (bootstep started)
        self.stopping = False     # SIGTERM/SIGINT received, or worker_shutdown
        self.last_beat: float | None = None
        self._lock = threading.Lock()

    def beat(self) -> None:
        """The consumer loop is turning."""
        self.last_beat = time.monotonic()

    def set_connected(self, up: bool) -> None:
        with self._lock:
            self.connected = up
            if up:
                self.beat()

    def _age(self) -> float | None:
        return None if self.last_beat is None else round(time.monotonic() - self.last_beat, 3)

    def _stopping(self) -> bool:
        return self.stopping or shutting_down()

    def _stale(self) -> bool:
        age = self._age()
        return age is not None and age > self.stale_after_s

    def liveness(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of `/health`."""
        facts = {"heartbeatAgeSeconds": self._age(), "consumer": "running" if self.connected else "connecting"}
        if self._stopping():
            return 503, {"status": "DOWN", "reason": "shutting down", **facts}
        if self.connected and self._stale():
            return 503, {"status": "DOWN", "reason": "consumer heartbeat stale",
                         "staleAfterSeconds": self.stale_after_s, **facts}
        if self.connected and self.stall.reason:
            return 503, {"status": "DOWN", "reason": self.stall.reason, **facts}
        return 200, {"status": "UP", **facts}

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of `/ready`."""
        facts = {"heartbeatAgeSeconds": self._age(), "consumer": "running" if self.connected else "connecting"}
        if self._stopping():
            reason = "shutting down"
        elif not self.ready:
            reason = "starting"
        elif not self.connected:
            reason = "broker disconnected"
        elif self._stale():
            reason = "consumer heartbeat stale"
        elif self.stall.reason:
            reason = self.stall.reason
        else:
            return 200, {"status": "UP", **facts}
        return 503, {"status": "DOWN", "reason": reason, **facts}


STATE = HealthState()


def json_app(check: Check) -> WSGIApp:
    """A WSGI app answering every request with `check()` as JSON."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        status, body = check()
        data = json.dumps(body).encode()
        start_response(_REASONS.get(status, f"{status} Status"),
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                        ("Cache-Control", "no-store")])
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [data]

    return app


def routes(state: HealthState = STATE) -> dict[str, WSGIApp]:
    """The probe endpoints, to serve next to `/metrics`."""
    return {"/health": json_app(state.liveness), "/ready": json_app(state.readiness)}


class ConsumerHeartbeat(bootsteps.StartStopStep):
    """Consumer bootstep: started once the task consumer is up, stopped when the consumer stops or
    restarts (connection lost, shutdown). Stamps `STATE` from the consumer's timer, which the event
    loop drives: a stuck loop stops the heartbeat. Runs the stall watchdog thread meanwhile."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Any = None
        self.watch_stop = threading.Event()

    def start(self, parent: Any) -> None:
        STATE.set_connected(True)
        STATE.stall.received()  # a fresh consumer starts with a clean slate
        self.tref = parent.timer.call_repeatedly(HEARTBEAT_INTERVAL_S, STATE.beat)
        self.watch_stop = threading.Event()
        threading.Thread(target=stall.watch, args=(parent, STATE.stall, self.watch_stop), name="stall-watch",
                         daemon=True).start()

    def stop(self, parent: Any) -> None:
        STATE.set_connected(False)
        self.watch_stop.set()
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


@signals.worker_ready.connect
def _on_ready(**_: Any) -> None:
    STATE.ready = True


@signals.task_received.connect
def _on_received(**_: Any) -> None:
    STATE.stall.received()


@signals.worker_shutting_down.connect
def _on_shutting_down(**_: Any) -> None:
    STATE.stopping = True


@signals.worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    STATE.stopping = True
