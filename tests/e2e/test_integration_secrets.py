"""Secrets from a Vault KV v2 stand-in and from a secrets directory feed a bearer token; no trace of it remains.

`VaultStub` (tests/http_target.py) is a stand-in for Vault's KV v2 HTTP API, because we cannot run
Vault here: it answers `GET /v1/secret/data/<path>` for a known `X-Vault-Token`, shaped like Vault.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.helpers import ADMIN
from tests.http_target import Reply, Seen, Target, VaultStub, json_reply
from tests.integration_support import http_def, run, start_pool
from tests.support import Receiver, Stack, wait_for

VAULT_TOKEN = "vault-root-" + uuid.uuid4().hex[:8]


@pytest.fixture
def target() -> Iterator[Target]:
    t = Target()
    yield t
    t.close()


def _secret_store(kind: str, secret: str, tmp_path: Path) -> tuple[dict[str, str], str, VaultStub | None]:
    """Worker env and the secret reference for one store kind."""
    if kind == "vault":
        vault = VaultStub(VAULT_TOKEN, {"billing/api": {"token": secret, "other": "x"}})
        return {"SECRETS_MANAGER_URL": vault.url, "TEL_SECRETS_TOKEN": VAULT_TOKEN}, "billing/api#token", vault
    directory = tmp_path / "secrets"
    directory.mkdir()
    (directory / "billing-token").write_text(secret + "\n")
    return {"SECRETS_MANAGER_URL": f"file://{directory}"}, "billing-token", None


@pytest.mark.parametrize("kind", ["vault", "file"])
def test_secret_feeds_bearer_token_and_leaves_no_trace(kind: str, stack: Stack, target: Target,
                                                       receiver: Receiver, tmp_path: Path) -> None:
    secret = f"s3cr3t-{kind}-{uuid.uuid4().hex}"
    env, ref, vault = _secret_store(kind, secret, tmp_path)
    try:
        start_pool(stack, **env)

        def echo(seen: Seen) -> Reply:  # a careless target that echoes credentials back
            if seen.headers.get("authorization") != f"Bearer {secret}":
                return Reply(401, {"error": "bad token"})
            return json_reply({"auth": seen.headers["authorization"], "q": seen.query.get("access_token")})

        url = target.on("/billing", echo)
        ok = run(stack, http_def(f"billing-{kind}", url, auth={"type": "bearer", "secretRef": ref},
                                 request={"query": {"access_token": "${secrets." + ref + "}"}},
                                 responseMapping={"echo": "$.auth", "q": "$.q"}))
        assert ok["status"] == "COMPLETED", ok["error"]
        assert target.calls("/billing")[-1].headers["authorization"] == f"Bearer {secret}"
        assert ok["output"] == {"echo": "Bearer ***", "q": ["***"]}
        assert ok["executionMetadata"]["endpoint"] == f"{url}?access_token=***"

        fail = target.on("/billing-fail", lambda seen: Reply(500, f"boom {seen.headers.get('authorization')}"))
        failed = run(stack, http_def(f"billing-fail-{kind}", fail, auth={"type": "bearer", "secretRef": ref},
                                     retry={"maxRetries": 0, "retryInterval": 10, "backoffMultiplier": 1.0}))
        assert failed["status"] == "FAILED"
        assert "Bearer ***" in failed["error"]["details"]["responseSnippet"]
        if vault is not None:
            assert "billing/api" in vault.reads
        wait_for(lambda: "task.instance.failed" in receiver.events_for(failed["id"]), 20, what="events delivered")

        api_text = "".join(requests.get(f"{stack.url}/api/v1/tasks/{t['id']}{suffix}", headers=ADMIN, timeout=10).text
                           for t in (ok, failed) for suffix in ("", "/events", "/logs"))
        dump = subprocess.run(["pg_dump", "--data-only", "--dbname",
                               stack.env["DATABASE_URL"].replace("+psycopg", "")],
                              capture_output=True, text=True, check=True).stdout
        assert ok["id"] in dump and "Bearer ***" in dump  # the dump is real and holds the tasks
        logs = {p.name: p.read_text(errors="replace") for p in stack.logdir.glob("*.log")}
        assert set(logs) >= {"router.log", "integration.log"}
        sent = json.dumps(receiver.received)
        for where, text in {"pg_dump": dump, "api": api_text, "events": sent, **logs}.items():
            assert secret not in text, f"the secret leaked into {where}"
    finally:
        if vault is not None:
            vault.close()
