"""Prometheus metrics on a real stack: the router's /metrics (gunicorn, several processes, multiprocess
mode) and an automated worker's own metrics port, after real tasks ran in the sandbox. Also checks the
worker's JSON log lines carry the task fields."""

from __future__ import annotations

import json
import re
import socket

import pytest
import requests

from taskexec.observability.logs import CELERY_TASK_LOGGERS
from tests.e2e.helpers import define, python_def, submit, wait_status
from tests.support import Stack, free_port, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

OK_CODE = "def main(input):\n    return {'n': input.get('n', 0) + 1}\n"
FAIL_CODE = "import sys\ndef main(input):\n    print('boom', file=sys.stderr)\n    sys.exit(3)\n"


def sample(text: str, metric: str, /, **labels: str) -> float | None:
    """The value of the first sample `metric{labels...}` (a subset match), or None."""
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != metric:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


def scrape(url: str) -> str:
    r = requests.get(url, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain"), r.text[:300]
    return r.text


@pytest.fixture
def worker_port(stack: Stack) -> int:
    port = free_port()
    stack.start_worker("automated", concurrency=2, TEL_METRICS_PORT=str(port))
    return port


def test_router_and_worker_metrics_after_real_tasks(stack: Stack, worker_port: int, env: dict[str, str]) -> None:
    define(stack, python_def("metrics-ok", OK_CODE))
    define(stack, python_def("metrics-fail", FAIL_CODE, **{"resourceRequirements": {"timeoutSeconds": 30}}))
    ok = [submit(stack, "metrics-ok", {"n": i}, correlationId=f"corr-{i}").json()["id"] for i in range(2)]
    bad = submit(stack, "metrics-fail", correlationId="corr-bad").json()["id"]
    assert [wait_status(stack, t)["status"] for t in ok] == ["COMPLETED", "COMPLETED"]
    failed = wait_status(stack, bad)
    assert failed["status"] == "FAILED" and failed["error"]["code"] == "NON_ZERO_EXIT"

    # the router: counters from committed state changes, merged over its gunicorn processes
    router = scrape(stack.url + "/metrics")
    queue = env["TEL_QUEUE_AUTOMATED_NAME"]
    finished = {"type": "AUTOMATED"}
    assert sample(router, "taskexec_tasks_submitted_total", definition="metrics-ok", **finished) == 2
    assert sample(router, "taskexec_tasks_finished_total", definition="metrics-ok", status="COMPLETED",
                  **finished) == 2
    assert sample(router, "taskexec_tasks_finished_total", definition="metrics-fail", status="FAILED",
                  **finished) == 1
    assert sample(router, "task_queue_time_seconds_count", type="AUTOMATED") == 3
    assert sample(router, "task_queue_time_seconds_bucket", type="AUTOMATED", le="+Inf") == 3
    assert sample(router, "task_execution_time_seconds_count", definition="metrics-ok", **finished) == 2
    assert 0 < (sample(router, "task_execution_time_seconds_sum", definition="metrics-ok", **finished) or 0) < 120
    assert sample(router, "celery_queue_length", queue_name=queue) == 0
    assert sample(router, "celery_active_worker_count", queue_name=queue) == 1
    assert sample(router, "celery_active_process_count", queue_name=queue) == 2
    assert sample(router, "taskexec_tasks_open", type="AUTOMATED", status="RUNNING") == 0
    assert sample(router, "taskexec_outbox_backlog", target="orchestrator") is not None
    wait_for(lambda: sample(scrape(stack.url + "/metrics"), "taskexec_outbox_deliveries_total",
                            target="orchestrator", result="ok"), 15, what="outbox delivery counted")

    # the worker: its own port, celery-exporter's names and labels for worker-level series, attempts by outcome
    worker = scrape(f"http://127.0.0.1:{worker_port}/metrics")
    host = socket.gethostname()
    assert sample(worker, "celery_worker_up", hostname=host) == 1
    assert sample(worker, "celery_worker_tasks_active", hostname=host) == 0
    assert sample(worker, "taskexec_worker_concurrency", hostname=host, pool="automated") == 2
    assert sample(worker, "taskexec_attempts_total", pool="automated", outcome="COMPLETED") == 2
    assert sample(worker, "taskexec_attempts_total", pool="automated", outcome="NON_ZERO_EXIT") == 1
    execute = {"name": "taskexec.execute.automated", "hostname": host, "queue_name": queue}
    assert sample(worker, "celery_task_received_total", **execute) == 3
    assert sample(worker, "celery_task_succeeded_total", **execute) == 3
    assert sample(worker, "celery_task_runtime_count", **execute) == 3
    assert not re.search(r"^flower_", worker, re.M), "Flower's names would clash inside Flower"

    # the worker's log lines about a task carry its id, definition, attempt and correlation id
    lines = [json.loads(x) for x in stack.procs["automated"].text().splitlines() if x.startswith("{")]
    about_bad = [x for x in lines if x.get("taskId") == bad]
    assert {"task started", "task finished"} <= {x["msg"] for x in about_bad}
    # Celery's own per-task INFO lines ("received", "succeeded in") are left out at INFO: the pool's lines above
    # say the same with the task's fields; at DEBUG they show, and carry the same context (tests/unit/test_logs.py)
    assert not any(x["logger"] in CELERY_TASK_LOGGERS for x in lines), "Celery's per-task lines are DEBUG"
    for x in about_bad:
        assert (x["definition"], x["attempt"], x["correlationId"]) == ("metrics-fail", 1, "corr-bad"), x
    assert stack.env["TEL_JWT_SECRET"] not in stack.procs["automated"].text()
