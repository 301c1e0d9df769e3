"""The worker pools' client for the router's internal API (they hold no database credentials).

Every call is a typed method taking and returning the models of `taskexec.contract.protocol`. With
``batch=True`` (the execute tasks' long-lived client) the reports of all threads of a worker process
are coalesced: a sender thread takes whatever reports are waiting and sends them in one ``POST
/internal/v1/reports``, so under load a pool pays one HTTP round trip for many tasks, and at rest
a report leaves at once (no timer). Each report keeps its own answer, and its own retries while the
router is unreachable or answers 5xx.
"""

from __future__ import annotations

import http.client
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import requests
from pydantic import BaseModel

from taskexec.clients.keepalive import KeepAlive
from taskexec.contract.protocol import (
    MAX_REPORTS,
    AssignReport,
    DeferIn,
    DeferReport,
    FinishIn,
    FinishReport,
    LostIn,
    LostOut,
    LostReport,
    Report,
    ReportsIn,
    ReportsOut,
    StartIn,
    StartOut,
    StartReport,
    TaskStateOut,
    TaskStatusOut,
)
from taskexec.contract.schemas import ErrorEnvelope
from taskexec.core.config import Settings
from taskexec.core.constants import INTERNAL_PREFIX
from taskexec.core.exceptions import Conflict, NotFound, TaskexecError, Unavailable
from taskexec.observability import tracing

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
Raw = tuple[int, Any]  # HTTP status and parsed JSON body (None when empty or not JSON)
_NETWORK_ERRORS = (OSError, http.client.HTTPException, requests.RequestException)
TIMEOUT = (3.05, 30.0)
SENDERS = 2  # reports in flight at once per worker process
SENDER_IDLE_S = 30.0  # a sender thread with nothing to send for this long ends (a new one starts on demand)


class RouterClient:
    """Calls `/internal/v1/...` with the service credential, retrying while the router is unreachable."""

    def __init__(self, settings: Settings, retry_for_s: float = 120.0, batch: bool = False) -> None:
        self.base = settings.task_router_url.rstrip("/") + INTERNAL_PREFIX
        self.retry_for_s = retry_for_s
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        token = settings.service_token.get_secret_value() if settings.service_token else ""
        if token.count(".") == 2:
            self.headers["Authorization"] = f"Bearer {token}"
        elif token:
            self.headers["X-API-Key"] = token
        self.keepalive = KeepAlive(*TIMEOUT)
        self.http: requests.Session | None = None
        if not self.keepalive.usable(self.base):  # a proxy from the environment applies: let requests do it
            self.http = requests.Session()
            self.http.headers.update(self.headers)
        self._batcher = _Batcher(self._send_reports) if batch else None
        self._batch_ok = True  # False once the router turned out to have no /reports (an older router)

    # ------------------------------------------------------------ the protocol
    def start(self, task_id: str, body: StartIn) -> StartOut:
        return self._report(StartReport(task_id=task_id, **dict(body)), f"/tasks/{task_id}/start", StartOut)

    def assign(self, task_id: str, body: StartIn) -> TaskStateOut:
        return self._report(AssignReport(task_id=task_id, **dict(body)), f"/tasks/{task_id}/assign", TaskStateOut)

    def finish(self, task_id: str, body: FinishIn) -> TaskStateOut:
        return self._report(FinishReport(task_id=task_id, **dict(body)), f"/tasks/{task_id}/finish", TaskStateOut)

    def defer(self, task_id: str, body: DeferIn) -> TaskStateOut:
        return self._report(DeferReport(task_id=task_id, **dict(body)), f"/tasks/{task_id}/defer", TaskStateOut)

    def lost(self, task_id: str, body: LostIn) -> LostOut:
        return self._report(LostReport(task_id=task_id, **dict(body)), f"/tasks/{task_id}/lost", LostOut)

    def status(self, task_id: str) -> TaskStatusOut:
        extra = tracing.outgoing_headers()
        return TaskStatusOut.model_validate(self._retrying(
            lambda: self._request("GET", f"/tasks/{task_id}/status", extra=extra)))

    def sweep(self, name: str) -> dict[str, Any]:
        """Ask the router to run one periodic sweep; its counts."""
        return dict(self._retrying(lambda: self._request("POST", f"/sweeps/{name}", b"{}")))

    # ------------------------------------------------------------ transport
    def _report(self, report: Report, path: str, out: type[M]) -> M:
        extra = tracing.outgoing_headers()  # the task's request id and trace, when a task is being run
        if self._batcher is not None and self._batch_ok:
            batcher = self._batcher
            send: Callable[[], Raw] = lambda: batcher.call(report, extra)  # noqa: E731
        else:
            body = _json(report, exclude={"kind", "task_id"})
            send = lambda: self._request("POST", path, body, extra)  # noqa: E731
        return out.model_validate(self._retrying(send, path))

    def _retrying(self, send: Callable[[], Raw], what: str = "") -> Any:
        """`send` until it gets an answer that is not 5xx/429 or the retry time is over; map errors."""
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.2
        while True:
            try:
                status, data = send()
            except _NETWORK_ERRORS as exc:
                if time.monotonic() > deadline:
                    raise Unavailable(f"router unreachable: {type(exc).__name__}") from None
                log.warning("router unreachable; retrying", extra={"path": what, "error": type(exc).__name__})
            else:
                if status < 300:
                    return data
                message = _message(status, data)
                if status == 404:
                    raise NotFound(message)
                if status == 409:
                    raise Conflict(message)
                if status < 500 and status != 429:
                    raise TaskexecError(message, status=status)
                if time.monotonic() > deadline:
                    raise Unavailable(f"router answered {status}")
                log.warning("router answered %s; retrying", status, extra={"path": what, "status": status})
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _request(self, method: str, path: str, body: bytes | None = None,
                 extra: dict[str, str] | None = None) -> Raw:
        url = self.base + path
        if self.http is not None:
            resp = self.http.request(method, url, data=body, headers=extra, timeout=TIMEOUT)
            return resp.status_code, _parse(resp.content)
        reply = self.keepalive.request(method, url, body, {**self.headers, **extra} if extra else self.headers)
        return reply.status, _parse(reply.body)

    def _send_reports(self, reports: list[Report], extra: dict[str, str] | None = None) -> list[Raw]:
        """One call for several reports; each gets the (status, body) its single endpoint would give.
        `extra`: the trace headers of a call carrying one task's report (several tasks: the router's own)."""
        status, data = self._request("POST", "/reports", _json(ReportsIn(items=reports)), extra)
        if status == 404 and not (isinstance(data, dict) and "results" in data):
            self._batch_ok = False  # an older router without /reports: single calls from now on
            log.warning("router has no /internal/v1/reports; sending reports one by one")
            return [self._request("POST", f"/tasks/{r.task_id}/{r.kind}", _json(r, exclude={"kind", "task_id"}),
                                  extra) for r in reports]
        if status != 200:
            return [(status, data)] * len(reports)
        results = ReportsOut.model_validate(data).results
        return [(r.status, r.result if r.error is None else {"error": r.error.model_dump()}) for r in results]

    def close(self) -> None:
        self.keepalive.close()
        if self.http is not None:
            self.http.close()


class _Batcher:
    """Coalesces reports from many threads into calls of `send` (at most SENDERS in flight)."""

    def __init__(self, send: Callable[[list[Report], dict[str, str] | None], list[Raw]]) -> None:
        self._send = send
        self._queue: queue.SimpleQueue[tuple[Report, Future[Raw], dict[str, str]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._senders = 0

    def call(self, report: Report, extra: dict[str, str]) -> Raw:
        future: Future[Raw] = Future()
        self._queue.put((report, future, extra))
        with self._lock:
            if self._senders < SENDERS:
                self._senders += 1
                threading.Thread(target=self._loop, name="router-reports", daemon=True).start()
        return future.result()

    def _loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=SENDER_IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._senders -= 1
                        return
                continue
            batch = [first]
            while len(batch) < MAX_REPORTS:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:  # a call carrying one report (at rest, the common case) carries its task's trace too
                answers = self._send([report for report, _, _ in batch], batch[0][2] if len(batch) == 1 else None)
            except BaseException as exc:  # noqa: BLE001 - every caller gets it (and retries)
                for _, future, _ in batch:
                    future.set_exception(exc)
                continue
            for (_, future, _), answer in zip(batch, answers, strict=True):
                future.set_result(answer)


def _json(model: BaseModel, exclude: set[str] | None = None) -> bytes:
    return model.model_dump_json(by_alias=True, exclude=exclude).encode()


def _parse(body: bytes) -> Any:
    import json

    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _message(status: int, data: Any) -> str:
    try:
        return ErrorEnvelope.model_validate(data).error.message
    except Exception:
        return f"HTTP {status}"
