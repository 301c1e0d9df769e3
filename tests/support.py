"""Test helpers: real PostgreSQL databases cloned from a migrated template, real processes, a receiver."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("TEL_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:55432/postgres")
REDIS_URL = os.environ.get("TEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("TEL_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
JWT_SECRET = "test-secret-0123456789abcdef-0123456789"
# One template per pytest process: concurrent sessions must not drop each other's template.
TEMPLATE_DB = os.environ.get("TEL_TEST_TEMPLATE_DB") or f"taskexec_template_{os.getpid()}"


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def db_url(name: str) -> str:
    base = PG_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def admin_conn() -> psycopg.Connection:
    return psycopg.connect(_libpq(PG_URL), autocommit=True)


def create_template() -> None:
    """Migrate a template database once per session (this also runs Alembic for real)."""
    from taskexec.store.migrate import upgrade

    with admin_conn() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    upgrade(db_url(TEMPLATE_DB))


def drop_template() -> None:
    with admin_conn() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")


def clone_database() -> str:
    name = "t_" + uuid.uuid4().hex[:12]
    with admin_conn() as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    return name


def drop_database(name: str) -> None:
    with admin_conn() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(database: str, prefix: str, **extra: str) -> dict[str, str]:
    """Settings for one isolated stack: its own database and its own queue names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEL_") and k not in ("DATABASE_URL",)}
    env.update(
        {
            "DATABASE_URL": db_url(database),
            "CELERY_BROKER_URL": REDIS_URL,
            "TEL_JWT_SECRET": JWT_SECRET,
            "TEL_QUEUE_AUTOMATED_NAME": f"{prefix}-automated",
            "TEL_QUEUE_MANUAL_NAME": f"{prefix}-manual",
            "TEL_QUEUE_INTEGRATION_NAME": f"{prefix}-integration",
            "TEL_QUEUE_DEADLETTER_NAME": f"{prefix}-deadletter",
            "TEL_OUTBOX_POLL_INTERVAL": "0.2",
            "TEL_OUTBOX_MAX_BACKOFF": "2",
            # the stand-ins for external services listen on 127.0.0.1: open exactly that address to the egress
            # guard of integration calls (every other loopback address stays refused)
            "TEL_INTEGRATION_ALLOWED_NETWORKS": "127.0.0.1/32",
            "TEL_CALLBACK_ALLOWED_NETWORKS": "127.0.0.1/32",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Receiver:
    """A real HTTP server standing in for the workflow orchestrator (a third party we cannot run here).

    It records every POST; `down()` makes it answer 503, `up()` restores 200.
    """

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.healthy = True
        self.lock = threading.Lock()  # a request's body and headers are appended together (same index)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # answers go out at once (no delayed-ACK stall)

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not outer.healthy:
                    self.send_response(503)
                    self.end_headers()
                    return
                with outer.lock:
                    outer.received.append(json.loads(body or b"null"))
                    outer.headers.append(dict(self.headers))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events_for(self, task_id: str) -> list[str]:
        return [e["type"] for e in self.received if e.get("data", {}).get("taskId") == task_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Proc:
    """A real child process with its output captured to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 - lives as long as the process it captures
        self.popen = subprocess.Popen(args, env=env, stdout=self._fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                      start_new_session=True)

    def stop(self, sig: int = 15, timeout: float = 20) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, 9)
                self.popen.wait()
        self._fh.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def taskexec(*args: str) -> list[str]:
    return [sys.executable, "-m", "commands.cli", *args]


class Stack:
    """Router plus chosen worker pools as real processes against one test database."""

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.port = free_port()
        self.env = {**env, "TEL_PORT": str(self.port), "TASK_ROUTER_URL": f"http://127.0.0.1:{self.port}"}
        self.url = f"http://127.0.0.1:{self.port}"
        self.logdir = logdir
        self.procs: dict[str, Proc] = {}
        self.service_key = ""

    def start_router(self) -> None:
        from taskexec.store.auth import create_api_key
        from taskexec.store.db import Database

        if not self.service_key:
            db = Database(self.env["DATABASE_URL"])
            with db.session() as s:
                _, self.service_key = create_api_key(s, "test-workers", ["service"])
            db.dispose()
        router = self.procs["router"] = Proc(taskexec("router"), self.env, self.logdir / "router.log")
        try:
            wait_for(self._ready, 60, what="router ready")
        except AssertionError:  # never leave a router behind: the caller's teardown does not run
            router.stop()
            raise AssertionError(f"router not ready after 60 s; log tail:\n{router.text()[-3000:]}") from None

    def _ready(self) -> bool:
        try:
            return requests.get(self.url + "/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def worker_env(self) -> dict[str, str]:
        env = {k: v for k, v in self.env.items() if k != "DATABASE_URL"}
        env["TEL_SERVICE_TOKEN"] = self.service_key
        return env

    def start_worker(self, pool: str, name: str | None = None, concurrency: int = 2, **extra: str) -> Proc:
        name = name or pool
        proc = Proc(taskexec("worker", pool, "--concurrency", str(concurrency)), {**self.worker_env(), **extra},
                    self.logdir / f"{name}.log")
        self.procs[name] = proc
        wait_for(lambda: "ready." in proc.text() or proc.popen.poll() is not None, 60, what=f"{name} worker ready")
        assert proc.popen.poll() is None, proc.text()[-3000:]
        return proc

    def stop(self) -> None:
        for proc in list(self.procs.values())[::-1]:
            proc.stop()
