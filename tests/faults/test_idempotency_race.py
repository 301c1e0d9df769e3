"""1,000 submissions with duplicate `Idempotency-Key`s from 24 concurrent clients: exactly one task per key.

A real router (gunicorn: 2 processes x 8 threads) on a private PostgreSQL (whose log shows that inserts
really met at the unique constraint) and a private Redis broker (so the test can count the execute
messages published); no worker pool, the tasks stay PENDING. 100 keys are each sent 10 times, the
copies of a key side by side, so they reach both router processes at the same moment. The contract:
the first submission is 201, every replay 200 with the same task. A key reused with a different request
body is refused with 422 (the IETF `Idempotency-Key` draft's answer), and creates nothing.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests import support
from tests.conftest import auth
from tests.e2e.helpers import ADMIN, define
from tests.faults.load import query
from tests.faults.services import PostgresCluster, RedisServer
from tests.integration_support import http_def
from tests.support import Stack

pytestmark = [pytest.mark.faults, pytest.mark.slow]

KEYS, COPIES, CLIENTS = 100, 10, 24


@pytest.fixture
def env(private_pg: tuple[PostgresCluster, str], private_redis: RedisServer) -> dict[str, str]:
    """A private database (its server log shows the races) and a private broker (its queue can be counted)."""
    return {**support.base_env("unused", prefix="t" + uuid.uuid4().hex[:8]), "DATABASE_URL": private_pg[1],
            "CELERY_BROKER_URL": private_redis.url}


def body_for(key: int) -> dict[str, Any]:
    return {"taskDefinitionId": "idem", "input": {"order": key}, "priority": "HIGH", "correlationId": f"c-{key}"}


def test_duplicate_keys_from_concurrent_clients_make_one_task_each(
        private_pg: tuple[PostgresCluster, str], private_redis: RedisServer, stack: Stack) -> None:
    define(stack, http_def("idem", "http://127.0.0.1:9/never-called"))
    run = uuid.uuid4().hex[:8]
    # the copies of a key side by side: the clients send them at the same moment
    order = [k for k in random.sample(range(KEYS), KEYS) for _ in range(COPIES)]
    local = threading.local()
    sessions: list[requests.Session] = []  # one per thread, closed below (not left to the GC)

    def post(key: int) -> tuple[int, int, dict[str, Any]]:
        if not hasattr(local, "http"):
            local.http = requests.Session()
            sessions.append(local.http)
        r = local.http.post(f"{stack.url}/api/v1/tasks", json=body_for(key), timeout=60,
                            headers={**ADMIN, "Idempotency-Key": f"{run}-{key}"})
        return key, r.status_code, r.json()

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = list(pool.map(post, order))
    finally:
        for session in sessions:
            session.close()

    statuses = Counter(status for _, status, _ in answers)
    assert set(statuses) <= {200, 201}, [a for a in answers if a[1] not in (200, 201)][:5]
    by_key: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for key, status, body in answers:
        by_key[key].append((status, body["id"]))
    for key, got in by_key.items():
        assert len(got) == COPIES
        assert len({task_id for _, task_id in got}) == 1, (key, got)  # every answer names the same task
        assert sorted(status for status, _ in got) == [200] * (COPIES - 1) + [201], (key, got)
    assert statuses == {201: KEYS, 200: KEYS * (COPIES - 1)}

    db = stack.env["DATABASE_URL"]
    rows = query(db, "SELECT count(*), count(DISTINCT idempotency_key) FROM task_instances")
    assert rows == [(KEYS, KEYS)], rows
    ids = [got[0][1] for got in by_key.values()]
    created = query(db, "SELECT count(*) FROM task_events WHERE type = 'task.instance.created'")[0][0]
    assert created == KEYS  # a replay records no event ...
    assert private_redis.queued(stack.env["TEL_QUEUE_INTEGRATION_NAME"]) == KEYS  # ... nor a second message
    stored = dict(query(db, "SELECT id, input->>'order' FROM task_instances WHERE id = ANY(%s)", ids))
    assert all(stored[got[0][1]] == str(key) for key, got in by_key.items())  # each key kept its own body
    # the race was real: concurrent inserts of one key met at the unique constraint (the router then
    # answered with the task that won)
    races = private_pg[0].log().count(f"Key (idempotency_key)=(admin:{run}-")
    assert races >= 1, "no two copies of a key were ever inserted at the same time"
    print(f"\n{KEYS * COPIES} submissions, {KEYS} keys: {races} inserts lost the race to the unique constraint")


def test_a_key_reused_with_another_body_is_refused(stack: Stack) -> None:
    define(stack, http_def("idem", "http://127.0.0.1:9/never-called"))
    key = {"Idempotency-Key": f"reuse-{uuid.uuid4().hex[:8]}"}
    url = f"{stack.url}/api/v1/tasks"
    first = requests.post(url, json=body_for(1), headers={**ADMIN, **key}, timeout=10)
    assert first.status_code == 201, first.text
    for other in ({**body_for(1), "input": {"order": 2}}, {**body_for(1), "priority": "LOW"},
                  {**body_for(1), "correlationId": "another"}, {**body_for(1), "callbackUrl": "http://x.invalid/cb"}):
        r = requests.post(url, json=other, headers={**ADMIN, **key}, timeout=10)
        assert r.status_code == 422, (other, r.status_code, r.text)
        error = r.json()["error"]
        assert error["code"] == "VALIDATION_ERROR" and error["details"][0]["field"] == "Idempotency-Key", error
    same = requests.post(url, json=body_for(1), headers={**ADMIN, **key}, timeout=10)
    assert (same.status_code, same.json()["id"]) == (200, first.json()["id"])
    # keys are per caller: another user's identical key is a different submission
    theirs = requests.post(url, json=body_for(1), headers={**auth("bob", "submitter"), **key}, timeout=10)
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"], theirs.text
    rows = query(stack.env["DATABASE_URL"], "SELECT count(*) FROM task_instances")
    assert rows == [(2,)], rows
