"""Server-side request forgery through integration URLs, end to end: real router, real integration worker.

Only 127.0.0.1/32 is allowed (TEL_INTEGRATION_ALLOWED_NETWORKS, as in every test stack); the targets listen
on 127.0.0.1, the victim on 127.0.0.2. Each way of naming 127.0.0.2 (dotted, decimal, hex, octal, an
IPv4-mapped IPv6 literal, a host name that resolves to it, a redirect from an allowed server) ends the task
FAILED with DESTINATION_NOT_ALLOWED, not retried although the policy lists the code, and the victim accepts
no connection at all. The worker runs with a private /etc/hosts (`with_hosts`): the names `sneaky.test`
(127.0.0.2) and `allowed.test` (127.0.0.1) resolve through glibc as any name would. No test connection
leaves 127.0.0.0/8.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.http_target import Reply, Target, json_reply
from tests.integration_support import events, http_def, module_stack, run, with_hosts
from tests.support import Proc, Receiver, Stack, taskexec, wait_for

pytestmark = [pytest.mark.slow]
NEVER = {"maxRetries": 3, "retryInterval": 50, "retryableErrors": ["DESTINATION_NOT_ALLOWED", "CONNECTION_ERROR"]}


class Victim:
    """A TCP port on 127.0.0.2 counting the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.2", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


@pytest.fixture(scope="module")
def victim() -> Iterator[Victim]:
    v = Victim()
    yield v
    v.sock.close()


@pytest.fixture(scope="module")
def integration_service() -> Iterator[Target]:
    """The operator's Integration Service stand-in, on 127.0.0.2: its URL is not subject to the guard."""
    t = Target("127.0.0.2")
    t.on("/api/integrations/crm/invoke", json_reply({"customer": "c-1"}))
    yield t
    t.close()


@pytest.fixture(scope="module")
def pool(pg_template: None, tmp_path_factory: pytest.TempPathFactory, integration_service: Target
         ) -> Iterator[tuple[Stack, Receiver]]:
    logdir = tmp_path_factory.mktemp("integration-egress")
    with module_stack(logdir) as (stack, receiver):
        env = {**stack.worker_env(), "INTEGRATION_SERVICE_URL": integration_service.url,
               "TEL_INTEGRATION_KEY_PREFIX": f"tel:test:{stack.env['TEL_QUEUE_INTEGRATION_NAME']}"}
        argv = with_hosts({"sneaky.test": "127.0.0.2", "allowed.test": "127.0.0.1"}, Path(logdir),
                          taskexec("worker", "integration", "--concurrency", "4"))
        worker = stack.procs["integration"] = Proc(argv, env, Path(logdir) / "integration.log")
        wait_for(lambda: "ready." in worker.text() or worker.popen.poll() is not None, 60, what="worker ready")
        assert worker.popen.poll() is None, worker.text()[-3000:]
        yield stack, receiver


@pytest.fixture
def stack(pool: tuple[Stack, Receiver]) -> Stack:
    return pool[0]


@pytest.fixture
def target() -> Iterator[Target]:
    t = Target()
    yield t
    t.close()


def refused(stack: Stack, def_id: str, url: str) -> dict[str, Any]:
    task = run(stack, http_def(def_id, url, retry=NEVER))
    assert task["status"] == "FAILED", task
    assert task["error"]["code"] == "DESTINATION_NOT_ALLOWED", task["error"]
    assert task["retryCount"] == 0, task
    return task


@pytest.mark.parametrize("spelling", ["127.0.0.2", "2130706434", "0x7f000002", "0177.0.0.2", "[::ffff:127.0.0.2]",
                                      "sneaky.test"])
def test_every_spelling_of_a_loopback_address_outside_the_allowlist_is_refused(
        stack: Stack, victim: Victim, spelling: str) -> None:
    slug = re.sub(r"[^a-z0-9]+", "-", spelling.lower()).strip("-")
    task = refused(stack, f"ssrf-{slug}", f"http://{spelling}:{victim.port}/latest/meta-data")
    assert "loopback" in task["error"]["details"]["reason"]
    assert "public addresses only" in task["error"]["message"]
    assert [e["type"] for e in events(stack, task["id"])].count("task.instance.retry") == 0
    assert victim.accepted == 0


def test_a_redirect_from_an_allowed_server_to_it_is_refused(stack: Stack, target: Target, victim: Victim) -> None:
    for path, location in (("/hop", f"http://127.0.0.2:{victim.port}/stolen"),
                           ("/hop-name", f"http://sneaky.test:{victim.port}/stolen"),
                           ("/hop-decimal", f"http://2130706434:{victim.port}/stolen")):
        url = target.on(path, Reply(302, "", {"Location": location}))
        task = refused(stack, f"redirect{path.replace('/', '-')}", url)
        assert "redirected to" in task["error"]["message"], task["error"]
        assert len(target.calls(path)) == 1  # the allowed hop was made once; nothing after it
    assert victim.accepted == 0


def test_allowed_names_and_redirects_still_work_without_leaking_credentials(stack: Stack, target: Target) -> None:
    other = Target()  # another origin (another port) on the allowed address
    try:
        target.on("/ok", json_reply({"ok": 1}))
        task = run(stack, http_def("by-name", f"http://allowed.test:{target.port}/ok"))
        assert task["status"] == "COMPLETED", task
        assert target.calls("/ok")[-1].headers["host"] == f"allowed.test:{target.port}"  # the name, not the IP

        target.on("/same", Reply(302, "", {"Location": "/ok"}))
        task = run(stack, http_def("same-origin", f"{target.url}/same"))
        assert task["status"] == "COMPLETED" and task["executionMetadata"]["redirects"] == 1, task

        other.on("/land", json_reply({"landed": True}))
        target.on("/away", Reply(307, "", {"Location": f"{other.url}/land"}))
        task = run(stack, http_def("cross-origin", f"{target.url}/away", method="POST",
                                   request={"headers": {"X-Api-Token": "t0ps3cret", "Authorization": "Bearer b3arer"},
                                            "body": {"a": 1}}))
        assert task["status"] == "COMPLETED" and task["output"] == {"landed": True}, task
        first, landed = target.calls("/away")[-1], other.calls("/land")[-1]
        assert first.headers["x-api-token"] == "t0ps3cret"
        assert "x-api-token" not in landed.headers and "authorization" not in landed.headers
        assert landed.method == "POST" and landed.json() == {"a": 1}  # 307 keeps the method and the body
        assert landed.headers["idempotency-key"] == first.headers["idempotency-key"]
    finally:
        other.close()


def test_the_integration_service_url_is_the_operators_and_not_subject(
        stack: Stack, integration_service: Target) -> None:
    task = run(stack, {"id": "crm-lookup", "name": "crm", "type": "INTEGRATION",
                       "executionConfig": {"integrationId": "crm", "operation": "find", "params": {}}})
    assert task["status"] == "COMPLETED" and task["output"] == {"customer": "c-1"}, task
    assert len(integration_service.calls("/api/integrations/crm/invoke")) == 1
