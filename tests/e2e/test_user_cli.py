"""The user commands (`taskexec submit|get|wait|logs|events|cancel|retry|defs apply`) as real subprocesses
against a running router and AUTOMATED pool (Docker sandbox): the README's first task, idempotent `defs apply`
of the shipped examples, readable and `--json` output, and the exit statuses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskexec.store.auth import create_api_key
from taskexec.store.db import Database
from tests.conftest import make_token
from tests.support import ROOT, Stack, taskexec

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]

EXAMPLES = ROOT / "examples" / "definitions.yaml"
BOOM = "import sys\ndef main(input):\n    print('working')\n    print('disk full', file=sys.stderr)\n    sys.exit(2)\n"


def cli(stack: Stack, *args: str, token: str | None = None, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in stack.env.items() if not k.startswith("TEL_") and k != "DATABASE_URL"}
    env.update(TEL_API_URL=stack.url, TEL_API_TOKEN=token or make_token("dev", ("admin",)))
    return subprocess.run(taskexec(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
    return out.stdout


def as_json(out: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(out))


@pytest.fixture
def pool(stack: Stack) -> Stack:
    stack.start_worker("automated", concurrency=2, TEL_METRICS_PORT="0")
    return stack


def test_first_task_and_idempotent_defs_apply(pool: Stack, tmp_path: Path) -> None:
    stack = pool
    first = ok(cli(stack, "defs", "apply", str(EXAMPLES)))
    assert first.splitlines() == ["add: registered version 1.0.0", "approve-expense: registered version 1.0.0"]
    assert ok(cli(stack, "defs", "apply", str(EXAMPLES))).splitlines() == [
        "add: unchanged, version 1.0.0", "approve-expense: unchanged, version 1.0.0"]
    docs = list(yaml.safe_load_all(EXAMPLES.read_text()))
    docs[1]["description"] = "Check the receipt twice."
    changed = tmp_path / "defs.json"
    changed.write_text(json.dumps(docs))  # a JSON list works as well
    result = as_json(cli(stack, "defs", "apply", str(changed), "--json"))
    assert [(r["id"], r["version"], r["changed"]) for r in result] == [
        ("add", "1.0.0", False), ("approve-expense", "1.0.1", True)]

    # the README's first task: submit and watch
    done = cli(stack, "submit", "add", "--input", '{"a": 2, "b": 3}', "--wait")
    assert ok(done).startswith("id ") and "status      COMPLETED" in done.stdout and '{"sum": 5}' in done.stdout
    task_id = done.stdout.split()[1]
    got = as_json(cli(stack, "get", task_id, "--json"))
    assert got["status"] == "COMPLETED" and got["output"] == {"sum": 5} and got["input"] == {"a": 2, "b": 3}
    events = ok(cli(stack, "events", task_id)).splitlines()
    assert "task.instance.created" in events[0] and "task.instance.completed" in events[-1]
    assert "-> COMPLETED" in events[-1]

    (tmp_path / "in.yaml").write_text("a: 40\nb: 2\n")
    sent = as_json(cli(stack, "submit", "add", "--input", f"@{tmp_path / 'in.yaml'}", "--json",
                       "--idempotency-key", "readme-1"))
    again = as_json(cli(stack, "submit", "add", "--input", '{"a": 40, "b": 2}', "--json",
                        "--idempotency-key", "readme-1"))
    assert again["id"] == sent["id"] and again["replayed"] and not sent["replayed"]
    waited = as_json(cli(stack, "wait", sent["id"], "--json"))
    assert waited["output"] == {"sum": 42}


def test_failures_logs_retry_cancel_and_exit_statuses(pool: Stack, tmp_path: Path) -> None:
    stack = pool
    defs = tmp_path / "defs.yaml"
    defs.write_text(yaml.safe_dump_all([
        {"id": "boom", "name": "boom", "type": "AUTOMATED", "retryPolicy": {"maxRetries": 0},
         "executionConfig": {"runtime": "python", "code": BOOM}},
        {"id": "nap", "name": "nap", "type": "AUTOMATED", "executionConfig": {
            "runtime": "python", "code": "import time\ndef main(input):\n    time.sleep(60)\n",
            "resourceRequirements": {"timeoutSeconds": 90}}},
        {"id": "later", "name": "later", "type": "MANUAL", "executionConfig": {"assignment": {"role": "ops"}},
         "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}}}},
    ]))
    ok(cli(stack, "defs", "apply", str(defs)))

    failed = cli(stack, "submit", "boom", "--wait")
    assert failed.returncode == 3, (failed.stdout, failed.stderr)
    assert "status      FAILED" in failed.stdout and "NON_ZERO_EXIT" in failed.stdout
    task_id = failed.stdout.split()[1]
    logs = cli(stack, "logs", task_id)
    assert ok(logs) == "working\n" and logs.stderr == "disk full\n"
    assert ok(cli(stack, "retry", task_id)).strip() == f"{task_id} PENDING (runs again)"

    napping = as_json(cli(stack, "submit", "nap", "--json"))["id"]
    assert ok(cli(stack, "cancel", napping, "--reason", "changed my mind")).strip() == f"{napping} CANCELLED"
    twice = cli(stack, "cancel", napping)
    assert twice.returncode == 1 and "CONFLICT" in twice.stderr

    bad_input = cli(stack, "submit", "later", "--input", '{"a": "two", "b": 3}')
    assert bad_input.returncode == 1 and "VALIDATION_ERROR" in bad_input.stderr and "input.a" in bad_input.stderr
    as_envelope = cli(stack, "submit", "later", "--input", '{"a": "two", "b": 3}', "--json")
    assert json.loads(as_envelope.stdout)["error"]["details"][0]["field"] == "input.a"
    assert cli(stack, "submit", "later", "--input", "{not json").returncode == 2
    assert cli(stack, "submit", "later", "--input", "@/no/such/file").returncode == 2
    missing = cli(stack, "get", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr

    pending = as_json(cli(stack, "submit", "later", "--json"))["id"]  # no manual pool: stays PENDING
    late = cli(stack, "wait", pending, "--timeout", "1")
    assert late.returncode == 4 and "still PENDING" in late.stderr

    db = Database(stack.env["DATABASE_URL"])
    with db.session() as s:
        _, key = create_api_key(s, "readonly", ["monitor"])
    db.dispose()
    assert ok(cli(stack, "get", pending, token=key)).count(pending) == 1  # an API key works as TEL_API_TOKEN
    refused = cli(stack, "submit", "later", "--input", '{"a": 1}', token=key)
    assert refused.returncode == 1 and "FORBIDDEN" in refused.stderr
    unreachable = subprocess.run(taskexec("get", pending, "--url", "http://127.0.0.1:9"), cwd=ROOT,
                                 capture_output=True, text=True, timeout=60)
    assert unreachable.returncode == 1 and "UNAVAILABLE" in unreachable.stderr
