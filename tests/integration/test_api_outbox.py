"""Outbox delivery to a real HTTP receiver: the contract envelope, its signature, outage recovery in order."""

from __future__ import annotations

import hashlib
import hmac
import json
import select
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from taskexec.core.config import Settings
from taskexec.services.dispatch import Dispatcher
from taskexec.services.outbox import Deliverer, deliver_due
from taskexec.store.db import Database
from tests import support
from tests.api_helpers import create_definition, sql, submit

HOOK_SECRET = "hook-secret-for-tests"


@pytest.fixture
def settings(env: dict[str, str], receiver: support.Receiver) -> Settings:
    values = {k: v for k, v in env.items() if k.startswith(("TEL_", "DATABASE_URL", "CELERY_", "LOG_"))}
    return Settings(**values, WORKFLOW_ORCHESTRATOR_URL=receiver.url, TEL_WEBHOOK_SECRET=HOOK_SECRET)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    d = Database(settings.database_url)
    yield d
    d.dispose()


def deliver(db: Database, settings: Settings) -> int:
    deliverer = Deliverer(settings)
    try:
        return deliver_due(db, settings, deliverer)
    finally:
        deliverer.close()


def test_created_event_has_the_contract_envelope_and_signature(
    client: Any,
    admin: dict[str, str],
    db: Database,
    settings: Settings,
    receiver: support.Receiver,
    database: str,
) -> None:
    create_definition(client, admin)
    task_id = submit(client, admin, workflowInstanceId="wf-9", correlationId="corr-9")
    assert deliver(db, settings) == 1
    assert deliver(db, settings) == 0  # delivered once, not again

    [event] = receiver.received
    assert set(event) == {"type", "id", "timestamp", "data", "metadata"}
    assert event["type"] == "task.instance.created"
    assert event["data"]["taskId"] == task_id and event["data"]["status"] == "PENDING"
    assert event["data"]["workflowInstanceId"] == "wf-9"
    assert event["metadata"] == {"correlationId": "corr-9", "source": "task-execution-layer"}

    headers = {k.lower(): v for k, v in receiver.headers[0].items()}
    assert headers["x-tel-event-id"] == event["id"]
    body = json.dumps(event, separators=(",", ":")).encode()
    expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-tel-signature"], expected)
    assert sql(database, "SELECT count(*) FROM outbox") == [(0,)]  # delivered: deleted (in task_events still)
    assert sql(database, "SELECT type FROM task_events WHERE task_id = %s", task_id) == [("task.instance.created",)]


def test_events_carry_the_submitting_requests_ids(
    client: Any, admin: dict[str, str], db: Database, settings: Settings, receiver: support.Receiver
) -> None:
    """The orchestrator can join an event to the request that submitted its task: the same request id,
    the same trace (a new span); a task stored without ids (here: removed) gets none."""
    create_definition(client, admin)
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r = client.post("/api/v1/tasks", json={"taskDefinitionId": "greet", "input": {"name": "Ada"}},
                    headers={**admin, "X-Request-Id": "req-outbox-7", "traceparent": f"00-{trace_id}-{parent}-01"})
    assert r.status_code == 201
    bare = submit(client, admin)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE task_instances SET execution_metadata = NULL WHERE id = %(id)s", {"id": bare})
    assert deliver(db, settings) == 2

    by_task = {e["data"]["taskId"]: {k.lower(): v for k, v in h.items()}
               for e, h in zip(receiver.received, receiver.headers, strict=True)}
    traced = by_task[r.json["id"]]
    assert traced["x-request-id"] == "req-outbox-7"
    version, trace, span, flags = traced["traceparent"].split("-")
    assert (version, trace, flags) == ("00", trace_id, "01") and span != parent and len(span) == 16
    assert "x-request-id" not in by_task[bare] and "traceparent" not in by_task[bare]


def test_outage_delays_delivery_then_everything_arrives_in_order(
    client: Any,
    admin: dict[str, str],
    db: Database,
    settings: Settings,
    receiver: support.Receiver,
    database: str,
) -> None:
    create_definition(client, admin)
    first = submit(client, admin)
    second = submit(client, admin)
    client.post(f"/api/v1/tasks/{first}/cancel", json={"reason": "x"}, headers=admin)

    receiver.healthy = False
    assert deliver(db, settings) == 0
    rows = sql(database, "SELECT task_id, attempts, last_error FROM outbox ORDER BY id")
    assert len(rows) == 3  # nothing delivered, nothing deleted
    # Only the head of each task's queue was tried: the cancel waits behind the undelivered create.
    assert [(r[0], r[1]) for r in rows] == [(first, 1), (second, 1), (first, 0)]
    assert rows[0][2] == "HTTP 503"
    assert deliver(db, settings) == 0  # backing off: not due yet, still nothing delivered
    assert receiver.received == []

    receiver.healthy = True
    sql(database, "UPDATE outbox SET next_attempt_at = now() - interval '1 second'")
    delivered = deliver(db, settings)
    delivered += deliver(db, settings)  # the cancel becomes the head once the create is through
    assert delivered == 3
    assert receiver.events_for(first) == ["task.instance.created", "task.instance.cancelled"]
    assert receiver.events_for(second) == ["task.instance.created"]
    assert sql(database, "SELECT count(*) FROM outbox") == [(0,)]


def test_unreachable_receiver_is_retried_later(
    client: Any, admin: dict[str, str], env: dict[str, str], receiver: support.Receiver, database: str
) -> None:
    values = {k: v for k, v in env.items() if k.startswith(("TEL_", "DATABASE_URL", "CELERY_", "LOG_"))}
    closed = Settings(**values, WORKFLOW_ORCHESTRATOR_URL=f"http://127.0.0.1:{support.free_port()}")
    db = Database(closed.database_url)
    try:
        with db.session() as s:
            from taskexec.contract.schemas import SubmitIn
            from taskexec.services.manager import TaskManager
            from taskexec.store.auth import Principal

            create_definition(client, admin)
            TaskManager(closed).submit(
                s,
                SubmitIn(task_definition_id="greet", input={"name": "x"}),
                Principal("bob", ("submitter",)),
                None,
            )
        assert deliver(db, closed) == 0
        [(attempts, error, due_later)] = sql(
            database, "SELECT attempts, last_error, next_attempt_at > now() FROM outbox"
        )
        assert attempts == 1 and error == "ConnectionError" and due_later
    finally:
        db.dispose()


def test_one_pass_sends_every_queue_in_order_and_a_failing_queue_stops_alone(
    client: Any, admin: dict[str, str], db: Database, settings: Settings, receiver: support.Receiver,
    database: str,
) -> None:
    """A queue is one task's events for one target: a pass sends each queue's events in order (all of them, not
    one per pass), the queues at once; a receiver that refuses stops its queue only, at the refused event."""
    down = support.Receiver()
    down.healthy = False
    try:
        create_definition(client, admin)
        first = submit(client, admin, callbackUrl=down.url + "/hook")
        second = submit(client, admin)
        for task_id in (first, second):
            client.post(f"/api/v1/tasks/{task_id}/cancel", json={"reason": "x"}, headers=admin)
        assert deliver(db, settings) == 4  # both tasks' created + cancelled to the orchestrator, in one pass
        for task_id in (first, second):
            assert receiver.events_for(task_id) == ["task.instance.created", "task.instance.cancelled"]
        assert down.received == []
        rows = sql(database, "SELECT target, attempts, last_error IS NOT NULL FROM outbox ORDER BY id")
        # the orchestrator's are delivered (deleted); the refused callback head backs off, the next waits behind
        assert rows == [("callback", 1, True), ("callback", 0, False)]
        down.healthy = True
        sql(database, "UPDATE outbox SET next_attempt_at = now() - interval '1 second'")
        assert deliver(db, settings) == 2
        assert down.events_for(first) == ["task.instance.created", "task.instance.cancelled"]
    finally:
        down.close()


def test_a_callback_to_a_refused_literal_address_is_a_422_naming_the_field(
    client: Any, admin: dict[str, str], database: str,
) -> None:
    """Checked as data: nothing is sent to the address (the task is never stored)."""
    create_definition(client, admin)
    for url in ("http://10.1.2.3/cb", "http://169.254.169.254/latest/meta-data", "http://[::1]:9/cb"):
        r = client.post("/api/v1/tasks", json={"taskDefinitionId": "greet", "input": {"name": "a"}, "callbackUrl": url},
                        headers=admin)
        assert r.status_code == 422, r.json
        assert r.json["error"]["details"][0]["field"] == "callbackUrl", r.json
    assert sql(database, "SELECT count(*) FROM task_instances") == [(0,)]


def test_a_callback_name_resolving_to_a_refused_address_gets_nothing(
    client: Any, admin: dict[str, str], db: Database, settings: Settings, receiver: support.Receiver,
    database: str,
) -> None:
    """`localhost` passes the submit check (a name) and resolves to loopback, which this router may not reach
    when TEL_CALLBACK_ALLOWED_NETWORKS leaves it out: the callback is refused before connecting (and retried
    later), the orchestrator still gets its events. With loopback allowed it arrives."""
    hook = support.Receiver()
    try:
        create_definition(client, admin)
        task_id = submit(client, admin, callbackUrl=hook.url.replace("127.0.0.1", "localhost") + "/hook")
        closed = settings.model_copy(update={"callback_allowed_networks": ""})
        assert deliver(db, closed) == 1  # the orchestrator's created event only
        assert receiver.events_for(task_id) == ["task.instance.created"]
        assert hook.received == []
        [(attempts, error)] = sql(database, "SELECT attempts, last_error FROM outbox WHERE target = 'callback'")
        assert (attempts, error) == (1, "DestinationNotAllowed")
        sql(database, "UPDATE outbox SET next_attempt_at = now() - interval '1 second'")
        assert deliver(db, settings) == 1  # 127.0.0.1/32 allowed (the test settings)
        assert hook.events_for(task_id) == ["task.instance.created"]
    finally:
        hook.close()


class Hanging:
    """A callback receiver that reads each request and answers only when released (or never): a user's
    receiver that hangs. It tells how many requests it holds, answered, and their senders gave up on."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.holding = 0
        self.given_up = 0
        self.answered = 0
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = self.request.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                with outer.lock:
                    outer.holding += 1
                while not outer.release.is_set():
                    readable, _, _ = select.select([self.request], [], [], 0.05)
                    if readable and not self.request.recv(65536):  # the sender closed: it gave up
                        with outer.lock:
                            outer.holding -= 1
                            outer.given_up += 1
                        return
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                with outer.lock:
                    outer.holding -= 1
                    outer.answered += 1

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def wait_for(check: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return bool(check())


def test_a_hanging_callback_receiver_does_not_hold_up_the_orchestrators_events(
    client: Any, admin: dict[str, str], app: Any, db: Database, settings: Settings, receiver: support.Receiver,
) -> None:
    """Each call to a receiver that never answers waits for the read timeout (10 s). The router's callback
    sender waits on it alone: the dispatcher delivers the orchestrator's events of a task submitted meanwhile,
    while those calls are still waiting (before the fix, the dispatcher's pass waited for them)."""
    hanging = Hanging()
    dispatcher = Dispatcher(db, settings, app.extensions["taskexec"].publisher, Deliverer(settings))
    try:
        create_definition(client, admin)
        stuck = [submit(client, admin, callbackUrl=hanging.url + "/hook") for _ in range(3)]
        dispatcher.start()
        assert wait_for(lambda: hanging.holding == 3), (hanging.holding, hanging.given_up)
        later = submit(client, admin)
        dispatcher.wake.set()
        assert wait_for(lambda: receiver.events_for(later) == ["task.instance.created"])
        assert (hanging.holding, hanging.given_up) == (3, 0)  # still waiting: not delivered after a time-out
        assert all(receiver.events_for(task_id) == ["task.instance.created"] for task_id in stuck)
        hanging.release.set()  # the receiver answers at last: the callbacks are delivered
        assert wait_for(lambda: hanging.answered == 3) and hanging.given_up == 0
    finally:
        dispatcher.stop()
        dispatcher.join(15)
        dispatcher.callbacks.join(15)
        hanging.close()
        dispatcher.deliverer.close()
        dispatcher.callbacks.deliverer.close()


def test_a_callback_failing_past_its_max_age_is_given_up_and_the_orchestrators_event_is_not(
    client: Any, admin: dict[str, str], db: Database, settings: Settings, receiver: support.Receiver,
    database: str,
) -> None:
    """A user's callbackUrl that keeps refusing: its event is retried until TEL_CALLBACK_MAX_AGE, then
    deleted on its next failure and counted as abandoned; an orchestrator event as old, refused as well,
    stays to be retried, and so does a younger callback event."""
    from prometheus_client import REGISTRY

    def abandoned() -> float:
        labels = {"target": "callback", "result": "abandoned"}
        return REGISTRY.get_sample_value("taskexec_outbox_deliveries_total", labels) or 0.0

    down = support.Receiver()
    down.healthy = False
    receiver.healthy = False
    try:
        create_definition(client, admin)
        old, young = (submit(client, admin, callbackUrl=down.url + "/hook") for _ in range(2))
        sql(database, "UPDATE outbox SET created_at = now() - interval '2 days' WHERE task_id = %s", old)
        before = abandoned()
        assert deliver(db, settings) == 0
        rows = set(sql(database, "SELECT task_id, target, attempts FROM outbox"))
        assert rows == {(old, "orchestrator", 1), (young, "orchestrator", 1), (young, "callback", 1)}
        assert abandoned() == before + 1
        assert down.received == []  # both callbacks were refused (503)
    finally:
        receiver.healthy = True
        down.close()
