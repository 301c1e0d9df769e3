"""The `taskexec` console commands, run as real subprocesses against the test database."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import jwt

from tests.support import JWT_SECRET, ROOT, taskexec


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(taskexec(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_token_prints_a_jwt_the_router_accepts(env: dict[str, str], client: Any) -> None:
    out = run(env, "token", "--sub", "alice", "--roles", "admin", "--ttl", "600")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], issuer="auth-service")
    assert claims["sub"] == "alice" and claims["roles"] == ["admin"]
    assert client.get("/api/v1/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_apikey_create_prints_a_key_once_and_it_works(env: dict[str, str], client: Any) -> None:
    out = run(env, "apikey", "create", "--name", "ci", "--roles", "submitter")
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert created["key"].startswith("tel_") and created["roles"] == ["submitter"]
    headers = {"X-API-Key": created["key"]}
    assert client.get("/api/v1/tasks", headers=headers).status_code == 200
    assert client.post("/api/v1/tasks/definitions", json={}, headers=headers).status_code == 403
    assert run(env, "apikey", "revoke", created["id"]).returncode == 0
    assert client.get("/api/v1/tasks", headers=headers).status_code == 401


def test_bad_config_stops_with_the_variable_name(env: dict[str, str]) -> None:
    out = run({**env, "MAX_CONCURRENT_TASKS": "lots"}, "config")
    assert out.returncode == 2
    assert "MAX_CONCURRENT_TASKS" in out.stderr


def test_config_dump_redacts_secrets(env: dict[str, str]) -> None:
    out = run({**env, "DATABASE_URL": "postgresql://u:hunter2@db/x"}, "config")
    assert out.returncode == 0, out.stderr
    assert JWT_SECRET not in out.stdout and "hunter2" not in out.stdout
    assert json.loads(out.stdout)["jwt_secret"] == "***"
