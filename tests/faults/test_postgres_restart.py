"""PostgreSQL (a private cluster) stopped mid-load and started again; the router is not restarted.

While the database is gone the router answers 503 with the error envelope (code UNAVAILABLE) on every
API call that needs it, `/ready` says 503 and names the database, `/health` (liveness) stays 200. The
integration workers' reports to the internal API fail with 503 meanwhile and are retried. Once the
database is back the same router process serves again, and every accepted task ends COMPLETED in one
attempt, with one call to the target, and every event reaches the orchestrator receiver in order.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests import support
from tests.e2e.helpers import ADMIN, define
from tests.faults.load import (
    NO_RETRY,
    CountingTarget,
    assert_ran_once,
    delivered_in_order,
    query,
    submit_many,
    wait_terminal,
)
from tests.faults.services import PostgresCluster
from tests.integration_support import http_def, start_pool
from tests.support import Receiver, Stack, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]

TASKS, DURING_CHECKS = 150, 5
DOWN_S = 10.0


@pytest.fixture
def env(private_pg: tuple[PostgresCluster, str]) -> dict[str, str]:
    """The stack's database is in the private cluster; broker and queues as usual (private queue names)."""
    _, url = private_pg
    return {**support.base_env("unused", prefix="t" + uuid.uuid4().hex[:8]), "DATABASE_URL": url,
            "TEL_RATE_LIMIT_DEFAULT": "100000/min"}


@pytest.fixture
def target() -> Iterator[CountingTarget]:
    t = CountingTarget(delay=0.3)
    yield t
    t.close()


def assert_unavailable(r: requests.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text[:300])
    body: dict[str, Any] = r.json()
    assert body["error"]["code"] == "UNAVAILABLE", body
    assert body["error"]["message"] and "Traceback" not in r.text


def query_first_id(receiver: Receiver) -> str:
    """The id of a task submitted before the outage (its `created` event reached the receiver)."""
    return str(wait_for(lambda: receiver.received and receiver.received[0]["data"]["taskId"], 30,
                        what="a first event"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restarted_mid_load(mode: str, private_pg: tuple[PostgresCluster, str], stack: Stack,
                                     receiver: Receiver, target: CountingTarget) -> None:
    cluster, db = private_pg
    workers = [start_pool(stack, name=f"integration-{n}", concurrency=3) for n in ("a", "b")]
    router = stack.procs["router"]
    define(stack, http_def("work", target.url, retry=NO_RETRY))
    boots = router.text().count("Booting worker")
    service_key = {"X-API-Key": stack.service_key}

    # a client that retries a 503 with the same Idempotency-Key, submitting before, during and after the outage
    results: list[tuple[int, dict[str, Any]]] = []
    run = uuid.uuid4().hex[:8]
    submitter = threading.Thread(target=lambda: results.extend(submit_many(
        stack.url, "work", TASKS, threads=3, headers=lambda i: {"Idempotency-Key": f"{run}-{i}"},
        retry_unavailable_for=90, pace=0.15)))
    submitter.start()
    wait_for(lambda: target.total() >= 20, 60, what="calls under way")
    calls_at_stop = target.total()
    cluster.stop(mode)
    stopped = time.monotonic()

    # the router stays up and says why it cannot serve
    assert requests.get(stack.url + "/health", timeout=10).status_code == 200
    ready = requests.get(stack.url + "/ready", timeout=20)
    assert ready.status_code == 503 and ready.json()["checks"]["database"] == "DOWN", ready.text
    some_id = query_first_id(receiver)
    for _ in range(DURING_CHECKS):
        assert_unavailable(requests.post(f"{stack.url}/api/v1/tasks", headers=ADMIN, timeout=20,
                                         json={"taskDefinitionId": "work", "input": {}}))
        assert_unavailable(requests.get(f"{stack.url}/api/v1/tasks/{some_id}", headers=ADMIN, timeout=20))
        assert_unavailable(requests.get(f"{stack.url}/api/v1/tasks", headers=ADMIN, timeout=20))
        # an API key is looked up in the database: no database is 503, not 401
        assert_unavailable(requests.get(f"{stack.url}/internal/v1/tasks/{some_id}/status", headers=service_key,
                                        timeout=20))
    calls_during = target.total() - calls_at_stop
    time.sleep(max(0.0, stopped + DOWN_S - time.monotonic()))
    cluster.start()
    restarted = time.monotonic()

    wait_for(lambda: requests.get(stack.url + "/ready", timeout=10).status_code == 200, 30, what="ready again")
    submitter.join(150)
    assert not submitter.is_alive(), "submissions hung"
    assert calls_at_stop < TASKS, "the database went away after the load was done"
    assert {s for s, _ in results} <= {200, 201}, [b for s, b in results if s not in (200, 201)][:3]
    ids = [b["id"] for _, b in results]
    assert len(set(ids)) == TASKS, "two submissions with different keys got the same task"
    keys = query(db, "SELECT count(*), count(DISTINCT idempotency_key) FROM task_instances "
                     "WHERE definition_id = 'work'")
    assert keys == [(TASKS, TASKS)], f"a retried submission created a second task: {keys}"

    wait_terminal(db, ids, timeout=150)
    finished = time.monotonic()
    assert_ran_once(db, ids, target)
    wait_for(lambda: len({e["id"] for e in receiver.received}) >= 3 * len(ids), 60, what="every event delivered")
    delivered = delivered_in_order(receiver, db, ids)
    assert all(types == ["task.instance.created", "task.instance.started", "task.instance.completed"]
               for types in delivered.values())

    # nothing was restarted: the same router master, no new gunicorn worker, the same pool processes
    assert router.popen.poll() is None and router.text().count("Booting worker") == boots
    assert all(w.popen.poll() is None for w in workers)
    retried = sum(w.text().count("router answered 503; retrying") for w in workers)
    assert retried >= 1, "no worker report failed during the outage: the test did not test that"
    replays = sum(1 for s, _ in results if s == 200)
    print(f"\n{mode}: {calls_at_stop} calls before the stop, {calls_during} while down ({DOWN_S:.0f}s); "
          f"all {len(ids)} done {finished - restarted:.1f}s after the start; worker retries: {retried}, "
          f"submissions answered 200 (a replay after a 503): {replays}")
