"""Load and bookkeeping for the fault tests: a target that counts calls per task, concurrent submission,
and the "nothing lost, nothing run twice, every event delivered in order" checks."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import psycopg
import requests

from tests.e2e.helpers import ADMIN
from tests.http_target import Reply, Seen, Target, json_reply
from tests.support import Receiver

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
TERMINAL_EVENTS = {"task.instance.completed", "task.instance.failed", "task.instance.cancelled",
                   "task.instance.timed_out"}
# Integration definitions without a retryPolicy: an infrastructure failure would show as a retry, which the
# tests then see (a target call more than once, or retryCount > 0) instead of it being hidden.
NO_RETRY = {"maxRetries": 0, "retryInterval": 100, "backoffMultiplier": 1.0}


def query(libpq_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read a database directly, bypassing our code."""
    with psycopg.connect(libpq_url.replace("+psycopg", ""), autocommit=True, connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


class CountingTarget:
    """The external service of the integration tasks: answers after `delay` s and counts calls per task.

    The integration pool sends `Idempotency-Key: tel-<task id>-<digest>`, which names the task.
    """

    def __init__(self, delay: float = 0.2) -> None:
        self.server = Target()
        self.delay = delay
        self.calls: Counter[str] = Counter()
        self.in_flight = 0
        self._lock = threading.Lock()
        self.url = self.server.on("/work", self._handle)

    def _handle(self, seen: Seen) -> Reply:
        task_id = seen.headers.get("idempotency-key", "")[4:40]
        with self._lock:
            self.calls[task_id] += 1
            self.in_flight += 1
        time.sleep(self.delay)
        with self._lock:
            self.in_flight -= 1
        return json_reply({"ok": True, "task": task_id})

    def total(self) -> int:
        with self._lock:
            return sum(self.calls.values())

    def close(self) -> None:
        self.server.close()


def submit_many(base_url: str, def_id: str, n: int, threads: int = 8,
                headers: Callable[[int], dict[str, str]] | None = None,
                retry_unavailable_for: float = 0.0, pace: float = 0.0) -> list[tuple[int, dict[str, Any]]]:
    """POST n submissions from `threads` concurrent clients; [(status, body)] in submission order.

    With `retry_unavailable_for` a client retries a 503 (and a refused connection) like a well-behaved
    client would, for up to that many seconds. `pace`: seconds each client waits after a submission.
    """
    local = threading.local()
    sessions: list[requests.Session] = []  # one per thread, closed at the end (not left to the GC)

    def one(i: int) -> tuple[int, dict[str, Any]]:
        if not hasattr(local, "http"):
            local.http = requests.Session()
            sessions.append(local.http)
        deadline = time.monotonic() + retry_unavailable_for
        while True:
            try:
                r = local.http.post(f"{base_url}/api/v1/tasks", json={"taskDefinitionId": def_id, "input": {"i": i}},
                                    headers={**ADMIN, **(headers(i) if headers else {})}, timeout=30)
            except requests.ConnectionError:
                if time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                raise
            if r.status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            time.sleep(pace)
            return r.status_code, r.json()

    try:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, range(n)))
    finally:
        for session in sessions:
            session.close()


def wait_terminal(libpq_url: str, ids: list[str], timeout: float) -> dict[str, str]:
    """Every task in a terminal status (read from the database); {id: status}."""
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        rows = query(libpq_url, "SELECT id, status FROM task_instances WHERE id = ANY(%s)", ids)
        statuses = dict(rows)  # type: ignore[arg-type]
        if len(statuses) == len(ids) and all(s in TERMINAL for s in statuses.values()):
            return statuses
        time.sleep(1.0)
    open_ = Counter(s for s in statuses.values())
    stuck = [t for t, s in statuses.items() if s not in TERMINAL][:5]
    raise AssertionError(f"not all {len(ids)} tasks terminal after {timeout}s: {dict(open_)}, "
                         f"missing rows: {len(set(ids) - set(statuses))}, e.g. {stuck}")


def delivered_in_order(receiver: Receiver, libpq_url: str, ids: list[str]) -> dict[str, list[str]]:
    """Per task, the event types as the receiver first saw them (duplicates dropped by `id`, as the
    contract tells receivers to do). Asserted: nothing is left in the outbox for the orchestrator (a row
    is deleted only once the receiver took it), every task got events, and each task's arrived in the
    order they were written (their timestamps: a task's changes are serialized by its row version)."""
    left = query(libpq_url, "SELECT count(*) FROM outbox WHERE target = 'orchestrator' AND task_id = ANY(%s)", ids)
    assert left[0][0] == 0, f"{left[0][0]} events of these tasks are still waiting in the outbox"
    first_seen: dict[str, list[tuple[datetime, str]]] = {}
    seen_ids: set[str] = set()
    for event in list(receiver.received):
        if event["id"] in seen_ids:
            continue
        seen_ids.add(event["id"])
        first_seen.setdefault(event["data"]["taskId"], []).append((datetime.fromisoformat(event["timestamp"]),
                                                                   event["type"]))
    wrong = {t: first_seen.get(t) for t in ids if not first_seen.get(t) or first_seen[t] != sorted(first_seen[t],
                                                                                                    key=lambda e: e[0])}
    assert not wrong, f"{len(wrong)} tasks' events missing or out of order at the receiver: {list(wrong.items())[:3]}"
    return {t: [typ for _, typ in first_seen[t]] for t in ids}


def assert_ran_once(libpq_url: str, ids: list[str], target: CountingTarget) -> None:
    """Each task: COMPLETED, one attempt, one call to the target, one start and one terminal event."""
    rows = query(libpq_url, "SELECT id, status, attempt, retry_count FROM task_instances WHERE id = ANY(%s)", ids)
    assert len(rows) == len(ids), f"{len(ids) - len(rows)} accepted tasks are not in the database"
    bad = [r for r in rows if r[1:] != ("COMPLETED", 1, 0)]
    assert not bad, f"{len(bad)} tasks not COMPLETED in exactly one attempt: {bad[:5]}"
    calls = {t: target.calls.get(t, 0) for t in ids}
    twice = {t: n for t, n in calls.items() if n != 1}
    assert not twice, f"{len(twice)} tasks called the target other than once: {list(twice.items())[:5]}"
    assert target.total() == len(ids), "the target saw calls of tasks that were not accepted"
    events = query(libpq_url, "SELECT task_id, type, count(*) FROM task_events WHERE task_id = ANY(%s) "
                              "GROUP BY task_id, type", ids)
    per_task: dict[str, Counter[str]] = {}
    for task_id, typ, n in events:
        per_task.setdefault(task_id, Counter())[typ] = n
    odd = {t: dict(c) for t, c in per_task.items()
           if c["task.instance.started"] != 1 or sum(c[e] for e in TERMINAL_EVENTS) != 1}
    assert not odd, f"{len(odd)} tasks started or ended other than once: {list(odd.items())[:3]}"
