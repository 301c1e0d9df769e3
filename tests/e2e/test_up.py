"""`taskexec up` as `make run` starts it, on PostgreSQL: the newcomer's path from the printed curl line to a
completed sample task and a manual task claimed and completed; what each process of the stack holds.

The one difference from `make run`: DATABASE_URL names a database of this test on the test cluster (the
cluster `make run` uses), so that parallel runs and a developer's own `taskexec` database stay apart. It
does not exist beforehand: `taskexec up` creates and migrates it, as it does `taskexec` on a first run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from taskexec.store.migrate import create_database_if_missing
from tests.faults.load import query
from tests.manual_support import GOOD_OUTPUT, manual_def
from tests.support import REDIS_URL, ROOT, db_url, drop_database, free_port, taskexec, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TERMINAL = ("COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED")


def environ(pid: int) -> dict[str, str]:
    """A process's environment as the kernel holds it (/proc/<pid>/environ)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def roles(up_pid: int) -> dict[str, psutil.Process]:
    """The stack's processes by role: router, worker-<pool>, beat, flower (children of `taskexec up`)."""
    out = {}
    for child in psutil.Process(up_pid).children():
        cmdline = child.cmdline()
        if "commands.cli" not in cmdline:  # Flower: `python -m celery --broker=... flower`
            out["flower" if "flower" in cmdline else " ".join(cmdline)] = child
            continue
        args = cmdline[cmdline.index("commands.cli") + 1:]
        out["-".join(args[:2]) if args[0] == "worker" else args[0]] = child
    return out


def test_up_on_postgresql_walks_the_newcomer_path(tmp_path: Path) -> None:
    port, flower_port = free_port(), free_port()
    database = "up_" + uuid.uuid4().hex[:12]
    url = db_url(database).replace("postgresql+psycopg://", "postgresql://")  # as a user would write it
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEL_") and k != "DATABASE_URL"}
    env.update({"TEL_STATE_DIR": str(tmp_path / "state"), "CELERY_BROKER_URL": REDIS_URL, "PYTHONUNBUFFERED": "1",
                "DATABASE_URL": url, "TEL_METRICS_PORT": "0",
                "TEL_QUEUE_AUTOMATED_NAME": f"up{port}-automated", "TEL_QUEUE_MANUAL_NAME": f"up{port}-manual",
                "TEL_QUEUE_INTEGRATION_NAME": f"up{port}-integration", "TEL_FLOWER_PORT": str(flower_port)})
    log = tmp_path / "up.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([*taskexec("up", "--port", str(port))], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                cwd=ROOT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: "Ctrl-C stops everything" in log.read_text(), 90, what="taskexec up banner")
        text = log.read_text()
        assert f"created database {database}" in text, text[-3000:]
        token = re.search(r"admin token: (\S+)", text).group(1)  # type: ignore[union-attr]
        admin = {"Authorization": f"Bearer {token}"}
        stack = roles(proc.pid)
        assert set(stack) == {"router", "worker-automated", "worker-manual", "worker-integration", "beat",
                              "flower"}, stack
        nodes = {name.split("-", 1)[1]: p.pid for name, p in stack.items() if name.startswith("worker")}
        # an operator's plain `celery -b` (no app loaded) gets its answers,
        # and the workers go on taking tasks afterwards (they once stopped: docs/operations.md)
        assert_nodes(env, nodes, ["-b", REDIS_URL])

        # 1. the printed curl line: the sample task ends COMPLETED
        curl = re.search(r"(curl -s -X POST .*?)\n\s*curl -s ", text, re.S).group(1)  # type: ignore[union-attr]
        out = subprocess.run(shlex.split(curl.replace("\\\n", " ")), capture_output=True, text=True, check=True)
        sample = finished(base, admin, json.loads(out.stdout)["id"])
        assert sample["status"] == "COMPLETED" and sample["output"] == {"greeting": "Hello, world!"}, sample

        # 2. a manual task, offered to a role, claimed and completed by a person with a token from `taskexec token`
        r = requests.post(f"{base}/api/v1/tasks/definitions", json=manual_def("review"), headers=admin, timeout=10)
        assert r.status_code == 201, r.text
        secret = (tmp_path / "state" / "jwt_secret").read_text().strip()
        minted = subprocess.run(taskexec("token", "--sub", "olga", "--roles", "operator,reviewers"),
                                env={**env, "TEL_JWT_SECRET": secret}, capture_output=True, text=True, check=True)
        olga = {"Authorization": f"Bearer {minted.stdout.strip()}"}
        r = requests.post(f"{base}/api/v1/tasks", json={"taskDefinitionId": "review", "input": {"doc": "a.pdf"}},
                          headers=admin, timeout=10)
        assert r.status_code == 201, r.text
        manual_id = r.json()["id"]
        wait_for(lambda: get(base, admin, manual_id)["status"] == "ASSIGNED", 30, what="manual task ASSIGNED")
        claimed = requests.post(f"{base}/api/v1/tasks/{manual_id}/claim", headers=olga, timeout=10)
        assert claimed.status_code == 200 and claimed.json()["assignee"] == "olga", claimed.text
        done = requests.post(f"{base}/api/v1/tasks/{manual_id}/complete", json={"output": GOOD_OUTPUT},
                             headers=olga, timeout=10)
        assert done.status_code == 200, done.text  # was a 500 on the old SQLite default (naive datetimes)
        manual = get(base, admin, manual_id)
        assert manual["status"] == "COMPLETED" and manual["output"] == GOOD_OUTPUT
        assert manual["executionMetadata"]["durationMs"] >= 0 and manual["dueDate"].endswith("Z"), manual

        # 3. the operator's views read the same PostgreSQL database
        stats = requests.get(f"{base}/api/v1/stats/overview?window=1h", headers=admin, timeout=10)
        assert stats.status_code == 200 and stats.json()["totals"]["byStatus"].get("COMPLETED") == 2, stats.text
        assert query(url, "SELECT status, count(*) FROM task_instances GROUP BY status") == [("COMPLETED", 2)]
        assert "taskexec_tasks_finished_total" in requests.get(f"{base}/metrics", timeout=10).text

        # 4. each process holds only what it needs, and the workers are distinct Celery nodes
        router = environ(stack["router"].pid)
        assert router["DATABASE_URL"] == url and router["TEL_JWT_SECRET"] == secret
        assert "TEL_SERVICE_TOKEN" not in router
        for name in ("worker-automated", "worker-manual", "worker-integration", "beat", "flower"):
            held = environ(stack[name].pid)
            assert not {"DATABASE_URL", "TEL_JWT_SECRET"} & set(held), (name, sorted(held))
            assert ("TEL_SERVICE_TOKEN" in held) == name.startswith("worker"), name
        assert_nodes(env, nodes, ["-A", "workers.app"])  # with the app loaded too

        # 5. Flower, started as compose starts it (no app loaded), sees the three pools and the sample task
        password = re.search(r"flower: .*password (\S+)\)", text).group(1)  # type: ignore[union-attr]
        flower = f"http://127.0.0.1:{flower_port}"
        assert requests.get(f"{flower}/api/workers", timeout=10).status_code == 401  # auth even on loopback

        def pools() -> set[str]:
            r = requests.get(f"{flower}/api/workers?refresh=1", auth=("admin", password), timeout=20)
            return {name.split("-")[0] for name in r.json()} if r.status_code == 200 else set()

        assert wait_for(lambda: pools() >= {"automated", "manual", "integration"}, 60, what="Flower lists the pools")
        seen = requests.get(f"{flower}/api/tasks", auth=("admin", password), timeout=10).json()
        assert any(t["args"] and sample["id"] in t["args"] for t in seen.values()), "Flower saw the sample task"

        # 6. the printed command-line lines work as printed (the README's first task)
        exports = re.search(r"export (TEL_API_URL=\S+) (TEL_API_TOKEN=\S+)", text)
        assert exports, text
        cli_env = {**env, **dict(pair.split("=", 1) for pair in exports.groups())}
        submit = re.search(r"\n\s*(\S+ submit hello-python .*)\n", text).group(1)  # type: ignore[union-attr]
        sent = subprocess.run(shlex.split(submit), env=cli_env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0 and sent.stdout.startswith("submitted "), (sent.stdout, sent.stderr)
        wait = re.search(r"\n\s*(\S+ wait) <id>\n", text).group(1)  # type: ignore[union-attr]
        waited = subprocess.run([*shlex.split(wait), sent.stdout.split()[1]], env=cli_env, cwd=ROOT,
                                capture_output=True, text=True, timeout=90)
        assert waited.returncode == 0 and "COMPLETED" in waited.stdout and "Hello, world!" in waited.stdout, waited
    finally:
        os.killpg(proc.pid, 2)  # Ctrl-C
        proc.wait(timeout=40)
    try:
        assert proc.returncode == 0, log.read_text()[-3000:]
        # the pools' API key died with the stack; creating the database again is a no-op (safe to run twice)
        assert query(url, "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL") == [(0,)]
        assert create_database_if_missing(db_url(database)) is False
    finally:
        drop_database(database)


def get(base: str, headers: dict[str, str], task_id: str) -> dict[str, Any]:
    return requests.get(f"{base}/api/v1/tasks/{task_id}", headers=headers, timeout=10).json()  # type: ignore[no-any-return]


def finished(base: str, headers: dict[str, str], task_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        task = get(base, headers, task_id)
        return task if task["status"] in TERMINAL else None

    return wait_for(check, 60, what=f"task {task_id} finished")  # type: ignore[no-any-return]


def assert_nodes(env: dict[str, str], pids: dict[str, int], app: list[str]) -> None:
    """`celery inspect ping` (the tool an operator brings) reaches each worker as `<pool>-<pid>@<host>`."""
    expected = {f"{pool}-{pid}@{socket.gethostname()}" for pool, pid in pids.items()}
    celery = str(Path(taskexec()[0]).with_name("celery"))
    out = subprocess.run([celery, *app, "inspect", "ping", "--json", "--timeout", "5",
                          "--destination", ",".join(sorted(expected))], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, (app, out.stdout + out.stderr)
    assert set(json.loads(out.stdout)) == expected, out.stdout
