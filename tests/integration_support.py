"""Helpers for the integration pool's end-to-end tests: definitions, starting pools, reading the trail."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from tests import support
from tests.e2e.helpers import ADMIN, define, submit, wait_status
from tests.support import Proc, Receiver, Stack

# Small backoffs keep the tests fast; the contract's formula and jitter still apply.
FAST_RETRY = {"maxRetries": 3, "retryInterval": 50, "backoffMultiplier": 2.0}


def http_def(def_id: str, url: str, *, method: str = "GET", retry: dict[str, Any] | None = None,
             output_schema: dict[str, Any] | None = None, input_schema: dict[str, Any] | None = None,
             **config: Any) -> dict[str, Any]:
    request = {"method": method, "url": url, **config.pop("request", {})}
    body: dict[str, Any] = {"id": def_id, "name": def_id, "type": "INTEGRATION",
                            "executionConfig": {"request": request, **config}}
    if retry is not None:
        body["retryPolicy"] = retry
    if output_schema is not None:
        body["outputSchema"] = output_schema
    if input_schema is not None:
        body["inputSchema"] = input_schema
    return body


def start_pool(stack: Stack, name: str = "integration", concurrency: int = 4, **env: str) -> Proc:
    """An integration worker whose breaker/rate-limit keys are private to this stack."""
    prefix = f"tel:test:{stack.env['TEL_QUEUE_INTEGRATION_NAME']}"
    return stack.start_worker("integration", name=name, concurrency=concurrency,
                              TEL_INTEGRATION_KEY_PREFIX=prefix, **env)


def run(stack: Stack, definition: dict[str, Any], input: Any = None, timeout: float = 60) -> dict[str, Any]:
    """Register (if new), submit, and wait for a terminal state."""
    existing = requests.get(f"{stack.url}/api/v1/tasks/definitions/{definition['id']}", headers=ADMIN, timeout=10)
    if existing.status_code == 404:
        define(stack, definition)
    r = submit(stack, definition["id"], input or {})
    assert r.status_code == 201, r.text
    return wait_status(stack, r.json()["id"], timeout=timeout)


def events(stack: Stack, task_id: str) -> list[dict[str, Any]]:
    r = requests.get(f"{stack.url}/api/v1/tasks/{task_id}/events", headers=ADMIN, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


@contextmanager
def module_stack(logdir: Path, **env: str) -> Iterator[tuple[Stack, Receiver]]:
    """Like the `stack` fixture, for a whole test module (one database, router and receiver)."""
    name = support.clone_database()
    receiver = Receiver()
    base = support.base_env(name, prefix="t" + uuid.uuid4().hex[:8])
    stack = Stack({**base, "WORKFLOW_ORCHESTRATOR_URL": receiver.url, **env}, logdir)
    try:
        stack.start_router()
        yield stack, receiver
    finally:
        stack.stop()
        receiver.close()
        support.drop_database(name)


def with_hosts(hosts: dict[str, str], tmp: Path, argv: list[str]) -> list[str]:
    """`argv` run in a private mount namespace whose /etc/hosts maps each name to its address.

    Names then resolve through the system's own resolver (glibc getaddrinfo, NSS `files`), exactly as in
    production; only the file it reads is this test's, and only inside that process (util-linux `unshare`,
    private propagation: the machine's /etc/hosts is untouched). Needs root, as CI has. No DNS server is
    asked anything.
    """
    path = tmp / f"hosts-{uuid.uuid4().hex[:8]}"
    path.write_text("127.0.0.1 localhost\n" + "".join(f"{address} {name}\n" for name, address in hosts.items()))
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            'mount --bind "$0" /etc/hosts && exec "$@"', str(path), *argv]
