"""The dashboard's JSON API and the router's /metrics, in-process against real PostgreSQL and Redis."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis

from tests import support
from tests.api_helpers import API, assert_envelope, create_definition, sql, submit
from tests.conftest import auth

SERVICE = auth("pool-1", "service")


def _run(client: Any, database: str, task_id: str, worker: str = "w1", **finish: Any) -> None:
    token = sql(database, "SELECT dispatch_token FROM task_instances WHERE id = %s", task_id)[0][0]
    r = client.post(f"/internal/v1/tasks/{task_id}/start", json={"dispatchToken": token, "workerId": worker},
                    headers=SERVICE)
    assert r.status_code == 200 and r.json["job"], r.json
    if finish:
        r = client.post(f"/internal/v1/tasks/{task_id}/finish", json={"attempt": 1, **finish}, headers=SERVICE)
        assert r.status_code == 200, r.json


@pytest.fixture
def tasks(client: Any, admin: dict[str, str], database: str, env: dict[str, str]) -> Any:
    """Three greet tasks: one COMPLETED, one FAILED (NON_ZERO_EXIT), one RUNNING; their messages stay queued."""
    create_definition(client, admin)
    done, failed, busy = (submit(client, admin) for _ in range(3))
    _run(client, database, done, status="COMPLETED", output={"hi": "Ada"})
    _run(client, database, failed, status="FAILED", error={"code": "NON_ZERO_EXIT", "message": "exit 3"})
    _run(client, database, busy, worker="host-a:42")
    yield {"done": done, "failed": failed, "busy": busy}
    with redis.Redis.from_url(support.REDIS_URL) as r:
        keys = list(r.scan_iter(match=env["TEL_QUEUE_AUTOMATED_NAME"] + "*"))
        if keys:
            r.delete(*keys)


def test_overview_counts_lists_and_pools(client: Any, admin: dict[str, str], tasks: dict[str, str],
                                         env: dict[str, str]) -> None:
    r = client.get(f"{API}/stats/overview?window=1h", headers=admin)
    assert r.status_code == 200, r.json
    body = r.json
    assert body["totals"]["submitted"] == 3
    assert body["totals"]["byStatus"] == {"COMPLETED": 1, "FAILED": 1, "RUNNING": 1}
    assert body["totals"]["failureRatio"] == 0.5
    assert body["open"]["AUTOMATED"] == {"RUNNING": 1}
    assert sum(body["timeline"]["byType"]["AUTOMATED"]) == 3
    assert sum(sum(v) for v in body["timeline"]["byStatus"].values()) == 3
    assert [f["id"] for f in body["failures"]] == [tasks["failed"]]
    assert body["failures"][0]["errorCode"] == "NON_ZERO_EXIT"
    assert body["errorCodes"] == [{"code": "NON_ZERO_EXIT", "count": 1}]
    assert [(t["id"], t["workerId"]) for t in body["running"]] == [(tasks["busy"], "host-a:42")]
    assert body["running"][0]["ageSeconds"] >= 0
    assert body["workers"] == [{"workerId": "host-a:42", "type": "AUTOMATED", "running": 1,
                                "oldestSince": body["workers"][0]["oldestSince"]}]
    assert {"id": "greet", "name": "Greet someone", "type": "AUTOMATED"} in body["definitions"]
    pools = {p["pool"]: p for p in body["pools"]}
    automated = pools["automated"]
    assert automated["queue"] == env["TEL_QUEUE_AUTOMATED_NAME"]
    assert automated["queued"] == 3 and automated["running"] == 1  # nobody consumes: all three messages wait
    assert automated["workersOnline"] == 0 and body["brokerReachable"] is True


def test_overview_filters_by_definition(client: Any, admin: dict[str, str], tasks: dict[str, str]) -> None:
    other = client.get(f"{API}/stats/overview?window=15m&definition=nothing-here", headers=admin).json
    assert other["totals"]["submitted"] == 0 and other["running"] == [] and other["failures"] == []
    assert other["timeline"]["bucketSeconds"] == 30 and other["timeline"]["points"] >= 30


def test_overview_permissions_and_validation(client: Any, tasks: dict[str, str]) -> None:
    assert_envelope(client.get(f"{API}/stats/overview"), 401, "UNAUTHORIZED")
    assert_envelope(client.get(f"{API}/stats/overview", headers=auth("bob", "operator")), 403, "FORBIDDEN")
    assert_envelope(client.get(f"{API}/stats/overview?window=2y", headers=auth("m", "monitor")), 400,
                    "VALIDATION_ERROR", "window")
    assert client.get(f"{API}/stats/overview", headers=auth("m", "monitor")).status_code == 200
    # the monitor role reads any task (the dashboard's task page), but cannot act on it
    assert client.get(f"{API}/tasks/{tasks['failed']}", headers=auth("m", "monitor")).status_code == 200
    assert client.get(f"{API}/tasks/{tasks['failed']}/events", headers=auth("m", "monitor")).status_code == 200
    assert client.post(f"{API}/tasks/{tasks['busy']}/cancel", json={}, headers=auth("m", "monitor")).status_code == 403


def sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


def test_metrics_in_process(client: Any, tasks: dict[str, str], env: dict[str, str]) -> None:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    text = r.get_data(as_text=True)
    queue = env["TEL_QUEUE_AUTOMATED_NAME"]
    assert sample(text, "celery_queue_length", queue_name=queue) == 3
    assert sample(text, "celery_active_worker_count", queue_name=queue) == 0
    assert sample(text, "taskexec_tasks_open", type="AUTOMATED", status="RUNNING") == 1
    assert (sample(text, "taskexec_tasks_finished_total", type="AUTOMATED", definition="greet",
                   status="FAILED") or 0) >= 1
    assert (sample(text, "task_queue_time_seconds_count", type="AUTOMATED") or 0) >= 3
    assert (sample(text, "task_execution_time_seconds_count", type="AUTOMATED", definition="greet") or 0) >= 2


def test_manual_tasks_by_deadline_gauge(client: Any, admin: dict[str, str], database: str, env: dict[str, str]
                                        ) -> None:
    """`taskexec_manual_tasks_by_deadline{state}` counts open (PENDING, ASSIGNED) manual tasks per deadline
    bucket, every bucket present (0 when empty); finished tasks and other types are not counted."""
    from tests.manual_support import manual_def

    create_definition(client, admin, manual_def("deadline-review"))
    create_definition(client, admin)
    due_in = {"overdue": "-5 minutes", "due_1h": "30 minutes", "due_24h": "5 hours", "later": "3 days"}
    ids = {state: submit(client, admin, "deadline-review", {}) for state in [*due_in, "none", "done"]}
    for state, offset in due_in.items():
        sql(database, "UPDATE task_instances SET due_date = now() + %s::interval WHERE id = %s", offset, ids[state])
    sql(database, "UPDATE task_instances SET status = 'ASSIGNED' WHERE id = %s", ids["later"])
    sql(database, "UPDATE task_instances SET status = 'COMPLETED', due_date = now() - interval '1 hour' "
        "WHERE id = %s", ids["done"])
    overdue_automated = submit(client, admin)
    sql(database, "UPDATE task_instances SET due_date = now() - interval '1 hour' WHERE id = %s", overdue_automated)

    text = client.get("/metrics").get_data(as_text=True)
    counts = {state: sample(text, "taskexec_manual_tasks_by_deadline", state=state)
              for state in ("overdue", "due_1h", "due_24h", "later", "none")}
    assert counts == {"overdue": 1, "due_1h": 1, "due_24h": 1, "later": 1, "none": 1}
    with redis.Redis.from_url(support.REDIS_URL) as r:
        keys = list(r.scan_iter(match=env["TEL_QUEUE_MANUAL_NAME"] + "*")) + list(
            r.scan_iter(match=env["TEL_QUEUE_AUTOMATED_NAME"] + "*"))
        if keys:
            r.delete(*keys)
