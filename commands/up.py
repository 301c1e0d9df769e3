"""`taskexec up`: the whole stack on one machine, in the foreground, on the local PostgreSQL and Redis.

Unless DATABASE_URL says otherwise the database is `taskexec` on the PostgreSQL that scripts/services.sh
starts (127.0.0.1:55432), created when missing: the same database engine as every test and every
deployment. Each process gets only the settings it needs (`process_env`).
"""

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
from urllib.parse import urlsplit

import requests

from taskexec.core.config import Settings, load_settings, local_database_url, mask_url
from taskexec.core.constants import POOLS, TaskType

# Never in a pool's or the scheduler's environment: they reach the router's API with a service key, not
# the database, and neither sign tokens nor webhooks (docs/security.md).
ROUTER_ONLY = ("DATABASE_URL", "TEL_JWT_SECRET", "TEL_WEBHOOK_SECRET")
# Never in the router's environment: the pools' own credentials.
POOL_ONLY = ("TEL_SERVICE_TOKEN", "TEL_SECRETS_TOKEN")

SAMPLE_DEFINITION = {
    "id": "hello-python",
    "version": "1.0.0",
    "name": "Hello from the sandbox",
    "type": TaskType.AUTOMATED.value,
    "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
    "outputSchema": {"type": "object", "properties": {"greeting": {"type": "string"}}},
    "executionConfig": {
        "runtime": "python",
        "code": "def main(input):\n    return {'greeting': 'Hello, ' + input['name'] + '!'}\n",
        "resourceRequirements": {"cpu": "0.5", "memory": "64Mi", "timeoutSeconds": 30},
    },
}


def flower_command(broker_url: str, port: int) -> list[str]:
    """Flower as compose.yaml starts it: stock, without our app (`--broker` only), on loopback. On
    RabbitMQ it reads queue lengths from the management API (the plugin scripts/services.sh enables)."""
    cmd = [sys.executable, "-m", "celery", f"--broker={broker_url}", "flower", "--address=127.0.0.1",
           f"--port={port}"]
    parts = urlsplit(broker_url)
    if parts.scheme.startswith(("amqp", "pyamqp")):
        auth = f"{parts.username or 'guest'}:{parts.password or 'guest'}"
        cmd.append(f"--broker_api=http://{auth}@{parts.hostname or '127.0.0.1'}:15672/api/")
    return cmd


def _secret(state: Path, name: str) -> str:
    path = state / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def local_redis_url(settings: Settings | None = None) -> str:
    """The Redis that scripts/services.sh starts (port: its TEL_REDIS_PORT knob)."""
    return f"redis://127.0.0.1:{(settings or load_settings()).redis_port}/0"


def process_env(env: dict[str, str], role: str, settings: Settings, service_key: str = "") -> dict[str, str]:
    """The environment of one process of the stack: `router`, `pool` or `beat`, each with only what it needs.

    With an AMQP broker the pools' shared breaker and rate-limit state goes to the local Redis (an
    integration pool refuses to start without one)."""
    if role == "router":
        return {k: v for k, v in env.items() if k not in POOL_ONLY}
    out = {k: v for k, v in env.items() if k not in ROUTER_ONLY and k not in POOL_ONLY}
    if role == "pool":
        out["TEL_SERVICE_TOKEN"] = service_key
        if "TEL_SECRETS_TOKEN" in env:
            out["TEL_SECRETS_TOKEN"] = env["TEL_SECRETS_TOKEN"]
        if not settings.redis_url and not settings.broker_url.startswith(("redis://", "rediss://")):
            out["TEL_REDIS_URL"] = local_redis_url(settings)
    return out


def prepare_database(url: str) -> None:
    """Create the database if missing and migrate it; a clear message when PostgreSQL does not answer."""
    from sqlalchemy.exc import OperationalError

    from taskexec.store.migrate import create_database_if_missing, upgrade

    try:
        if create_database_if_missing(url):
            print(f"taskexec: created database {url.rsplit('/', 1)[-1]}", flush=True)
        upgrade(url)
    except OperationalError as exc:
        raise SystemExit(f"taskexec up: PostgreSQL does not answer ({type(exc.orig).__name__}: "
                         f"{str(exc.orig).strip().splitlines()[0]}). `make run` starts the local one "
                         f"(bash scripts/services.sh start); or set DATABASE_URL") from None


def run_stack(port: int | None = None) -> None:
    state = Path(load_settings().state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", local_database_url())
    env.setdefault("TEL_JWT_SECRET", _secret(state, "jwt_secret"))
    env["TEL_STATE_DIR"] = str(state)
    settings = load_settings(DATABASE_URL=env["DATABASE_URL"], TEL_JWT_SECRET=env["TEL_JWT_SECRET"])
    port = port or settings.port
    env["TEL_PORT"] = str(port)
    env.setdefault("TASK_ROUTER_URL", f"http://127.0.0.1:{port}")

    from taskexec.store.auth import create_api_key, issue_token, revoke_api_key
    from taskexec.store.db import Database

    prepare_database(settings.database_url)
    db = Database(settings.database_url, pool_size=1)
    with db.session() as s:
        key_row, service_key = create_api_key(s, f"up-workers-{int(time.time())}", ["service"])
    exe = [sys.executable, "-m", "commands.cli"]
    procs = [subprocess.Popen([*exe, "router"], env=process_env(env, "router", settings))]
    pool_env = process_env(env, "pool", settings, service_key)
    for i, pool in enumerate(POOLS):
        metrics_port = str(settings.metrics_port + i if settings.metrics_port else 0)  # one port per worker
        procs.append(subprocess.Popen([*exe, "worker", pool, "--concurrency", "4", "--metrics-port", metrics_port],
                                      env=pool_env))
    procs.append(subprocess.Popen([*exe, "beat"], env=process_env(env, "beat", settings)))
    flower_url, flower_auth = "off (TEL_FLOWER_PORT=0)", f"admin:{_secret(state, 'flower_password')}"
    if settings.flower_port:  # with basic auth even on loopback: without it Flower answers any origin (CORS *)
        flower_url = f"http://127.0.0.1:{settings.flower_port}   (user admin, password {flower_auth[6:]})"
        procs.append(subprocess.Popen(flower_command(settings.broker_url, settings.flower_port),
                                      env={**process_env(env, "beat", settings), "FLOWER_BASIC_AUTH": flower_auth}))

    def stop(*_: object, code: int = 0) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        try:  # the pools' key dies with them: the next `up` makes a new one
            with db.session() as s:
                revoke_api_key(s, key_row.id)
        except Exception as exc:  # noqa: BLE001 - PostgreSQL may be gone first; the key is then left behind
            print(f"taskexec up: could not revoke the pools' API key: {exc}", file=sys.stderr)
        raise SystemExit(code)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    url = f"http://127.0.0.1:{port}"
    cli = _cli_path()
    token = issue_token(settings, "admin", ["admin"], ttl=7 * 86400)
    try:
        _wait_ready(url, procs)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        stop(code=1)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    r = requests.post(f"{url}/api/v1/tasks/definitions", headers=headers, data=json.dumps(SAMPLE_DEFINITION),
                      timeout=10)
    if r.status_code not in (201, 409):  # 409: registered by an earlier `taskexec up` on this database
        print(f"taskexec up: registering the sample definition failed: {r.status_code} {r.text[:300]}",
              file=sys.stderr)
    print(f"""
taskexec is up.
  router:      {url}   (API docs {url}/docs)
  flower:      {flower_url}
  database:    {mask_url(settings.database_url)}
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
    stop(code=1)


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
