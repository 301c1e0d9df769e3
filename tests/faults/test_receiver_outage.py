"""The orchestrator's receiver is down for a full minute while tasks run and finish, then comes back.

Two ways down: it answers 503 (tests/support.py's Receiver, unhealthy), or its process is really gone
(the listening socket closed: connection refused) and a new server binds the same port afterwards. The
receiver stands in for the workflow orchestrator, a third party. Nothing reaches it while it is down;
once up, every event of every task arrives (duplicates dropped by event id, as the contract tells
receivers to), in the order the router recorded them per task. Some tasks fail their first call, so
`task.instance.retry` and a second `started` are in the stream too.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from tests.e2e.helpers import define
from tests.faults.load import CountingTarget, delivered_in_order, query, submit_many, wait_terminal
from tests.http_target import Reply, Seen
from tests.integration_support import http_def, start_pool
from tests.support import Receiver, Stack, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]

TASKS = 40
OUTAGE_S = 60.0
MAX_BACKOFF_S = 8.0
RETRY = {"maxRetries": 2, "retryInterval": 200, "backoffMultiplier": 1.0}
CREATED, STARTED, RETRIED, COMPLETED = ("task.instance.created", "task.instance.started", "task.instance.retry",
                                        "task.instance.completed")


class RestartableReceiver(Receiver):
    """tests/support.py's Receiver whose server can really go away and come back on the same port."""

    def gone(self) -> None:
        self.server.shutdown()
        self.server.server_close()  # the port is closed: connection refused

    def back(self) -> None:
        port = int(self.url.rsplit(":", 1)[1])
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self.server.RequestHandlerClass)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[RestartableReceiver]:
    r = RestartableReceiver()
    yield r
    r.close()


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """A longer outbox backoff than the suite's default (2 s), so it really grows during the outage."""
    return {**env, "TEL_OUTBOX_MAX_BACKOFF": str(MAX_BACKOFF_S), "TEL_RATE_LIMIT_DEFAULT": "100000/min"}


@pytest.fixture
def target() -> Iterator[CountingTarget]:
    """Every third task's first call gets a 503 (a retry); the rest succeed."""
    t = CountingTarget(delay=0.1)
    plain = t.server.routes["/work"]

    def flaky(seen: Seen) -> Reply:
        task_id = seen.headers.get("idempotency-key", "")[4:40]
        if zlib.crc32(task_id.encode()) % 3 == 0 and t.calls[task_id] == 0:
            t.calls[task_id] += 1
            return Reply(503, {"error": "busy"})
        return plain(seen)

    t.server.on("/work", flaky)
    yield t
    t.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["503", "connection-refused"])
def test_receiver_down_for_a_minute_gets_every_event_in_order(
        how: str, stack: Stack, receiver: RestartableReceiver, target: CountingTarget) -> None:
    start_pool(stack, name="integration", concurrency=4)
    define(stack, http_def("notify", target.url, retry=RETRY))
    if how == "503":
        receiver.healthy = False
    else:
        receiver.gone()
    down_at = time.monotonic()

    results = submit_many(stack.url, "notify", TASKS, threads=2, pace=0.5)  # spread over ~10 s
    assert [s for s, _ in results] == [201] * TASKS, results[:3]
    ids = [b["id"] for _, b in results]
    db = stack.env["DATABASE_URL"]
    statuses = wait_terminal(db, ids, timeout=OUTAGE_S - 15)  # they all finish while it is still down
    assert set(statuses.values()) == {"COMPLETED"}
    retried = [t for t in ids if target.calls[t] == 2]
    assert retried and all(target.calls[t] in (1, 2) for t in ids), dict(target.calls)

    time.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
    assert receiver.received == [], "something was recorded while the receiver was down"
    failed = query(db, "SELECT count(*), max(attempts), min(last_error) FROM outbox "
                       "WHERE target = 'orchestrator' AND task_id = ANY(%s)", ids)[0]
    assert failed[0] >= TASKS and failed[1] >= 3, failed  # each task's head was tried again and again
    expected = "HTTP 503" if how == "503" else "ConnectionError"
    assert failed[2] == expected, failed
    total = failed[0]  # every event of these tasks, all still waiting
    if how == "503":
        receiver.healthy = True
    else:
        receiver.back()
    up_at = time.monotonic()

    wait_for(lambda: len({e["id"] for e in receiver.received}) >= total, 60, what="every event after recovery")
    caught_up = time.monotonic() - up_at
    delivered = delivered_in_order(receiver, db, ids)
    for task_id in ids:
        expected_types = [CREATED, STARTED, COMPLETED]
        if task_id in retried:
            expected_types = [CREATED, STARTED, RETRIED, STARTED, COMPLETED]
        assert delivered[task_id] == expected_types, (task_id, delivered[task_id])
    assert query(db, "SELECT count(*) FROM outbox")[0][0] == 0  # delivered rows are deleted
    print(f"\n{how}: {total} events of {TASKS} tasks ({len(retried)} retried) held for {OUTAGE_S:.0f}s; "
          f"all delivered {caught_up:.1f}s after the receiver came back")
