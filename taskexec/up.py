"""`taskexec up`: the whole stack on one machine, in the foreground, with embedded defaults."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from taskexec.config import load_settings

SAMPLE_DEFINITION = {
    "id": "hello-python",
    "name": "Hello from the sandbox",
    "type": "AUTOMATED",
    "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
    "outputSchema": {"type": "object", "properties": {"greeting": {"type": "string"}}},
    "executionConfig": {
        "runtime": "python",
        "code": "def main(input):\n    return {'greeting': 'Hello, ' + input['name'] + '!'}\n",
        "resourceRequirements": {"cpu": "0.5", "memory": "64Mi", "timeoutSeconds": 30},
    },
}


def _secret(state: Path, name: str) -> str:
    path = state / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def run_stack(port: int | None = None) -> None:
    state = Path(os.environ.get("TEL_STATE_DIR", ".taskexec")).resolve()
    state.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", f"sqlite:///{state / 'taskexec.sqlite'}")
    env.setdefault("TEL_JWT_SECRET", _secret(state, "jwt_secret"))
    env["TEL_STATE_DIR"] = str(state)
    settings = load_settings(DATABASE_URL=env["DATABASE_URL"], TEL_JWT_SECRET=env["TEL_JWT_SECRET"])
    port = port or settings.port
    env["TEL_PORT"] = str(port)
    env.setdefault("TASK_ROUTER_URL", f"http://127.0.0.1:{port}")

    from taskexec.auth import create_api_key, issue_token
    from taskexec.db import Database
    from taskexec.migrate import upgrade

    upgrade(settings.database_url)
    with Database(settings.database_url).session() as s:
        _, service_key = create_api_key(s, f"up-workers-{int(time.time())}", ["service"])
    worker_env = {k: v for k, v in env.items() if k != "DATABASE_URL"}  # pools never hold DB credentials
    worker_env["TEL_SERVICE_TOKEN"] = service_key
    exe = [sys.executable, "-m", "taskexec.cli"]
    procs = [subprocess.Popen([*exe, "router"], env=env)]
    for i, pool in enumerate(("automated", "manual", "integration")):
        metrics_port = str(settings.metrics_port + i if settings.metrics_port else 0)  # one port per worker
        procs.append(subprocess.Popen([*exe, "worker", pool, "--concurrency", "4", "--metrics-port", metrics_port],
                                      env=worker_env))
    procs.append(subprocess.Popen([*exe, "beat"], env=worker_env))

    def stop(*_: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    url = f"http://127.0.0.1:{port}"
    cli = _cli_path()
    token = issue_token(settings, "admin", ["admin"], ttl=7 * 86400)
    _wait_ready(url, procs)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    requests.post(f"{url}/api/v1/tasks/definitions", headers=headers, data=json.dumps(SAMPLE_DEFINITION), timeout=10)
    print(f"""
taskexec is up.
  router:      {url}   (API docs {url}/docs)
  admin token: {token}

Submit the sample task, then read it back with the id it returns:
  curl -s -X POST {url}/api/v1/tasks -H 'Authorization: Bearer {token}' \\
       -H 'Content-Type: application/json' -d '{{"taskDefinitionId": "hello-python", "input": {{"name": "world"}}}}'
  curl -s {url}/api/v1/tasks/<id> -H 'Authorization: Bearer {token}'

Or with the command line, in another terminal:
  export TEL_API_URL={url} TEL_API_TOKEN={token}
  {cli} submit hello-python --input '{{"name": "world"}}'
  {cli} wait <id>

API docs: {url}/docs   dashboard: {url}/dashboard   inbox: {url}/inbox
Ctrl-C stops everything.
""", flush=True)
    while all(p.poll() is None for p in procs):
        time.sleep(1)
    print("a process of the stack exited; stopping", file=sys.stderr)
    stop()


def _cli_path() -> str:
    """How to call the `taskexec` command from the current directory (e.g. `.venv/bin/taskexec`)."""
    path = Path(sys.executable).parent / "taskexec"
    if shutil.which("taskexec") == str(path):
        return "taskexec"
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _wait_ready(url: str, procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a process of the stack failed to start")
        try:
            if requests.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"router not ready at {url} after {timeout}s (is Redis running?)")
