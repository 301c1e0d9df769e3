"""Integration tasks: auth kinds, the Integration Service call, mapping, and bad input that must fail cleanly."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.helpers import ADMIN, define, submit, wait_status
from tests.http_target import Reply, Seen, Target, json_reply
from tests.integration_support import FAST_RETRY, http_def, module_stack, run, start_pool
from tests.support import Stack

API_KEY, PASSWORD, CLIENT_SECRET = "key-7f3a9c", "pw-0c41d2", "cs-93b7e1"


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    t = Target()
    yield t
    t.close()


@pytest.fixture(scope="module")
def stack(pg_template: None, tmp_path_factory: pytest.TempPathFactory, target: Target) -> Iterator[Stack]:
    secrets = tmp_path_factory.mktemp("secrets")
    for name, value in {"api-key": API_KEY, "password": PASSWORD, "client-secret": CLIENT_SECRET}.items():
        (secrets / name).write_text(value + "\n")
    with module_stack(tmp_path_factory.mktemp("integration-inputs")) as (s, _):
        start_pool(s, SECRETS_MANAGER_URL=f"file://{secrets}", INTEGRATION_SERVICE_URL=target.url)
        yield s


def _ok(seen: Seen) -> Reply:
    return json_reply({"path": seen.path, "query": seen.query, "items": [{"id": 1}, {"id": 2}]})


def test_api_key_in_header_and_query_and_basic_auth(stack: Stack, target: Target) -> None:
    url = target.on("/keyed", _ok)
    header = run(stack, http_def("api-key-header", url, auth={"type": "api_key", "secretRef": "api-key",
                                                                "name": "X-Key"}))
    assert header["status"] == "COMPLETED", header["error"]
    assert target.calls("/keyed")[-1].headers["x-key"] == API_KEY

    query = run(stack, http_def("api-key-query", url, auth={"type": "api_key", "secretRef": "api-key",
                                                             "in": "query", "name": "api_key"},
                                responseMapping={"n": "$.items[*].id", "status": "$status"}))
    assert query["status"] == "COMPLETED" and query["output"] == {"n": [1, 2], "status": 200}
    assert target.calls("/keyed")[-1].query["api_key"] == [API_KEY]
    assert API_KEY not in str(query), "the key leaked into the task"
    assert query["executionMetadata"]["endpoint"] == f"{url}?api_key=***"

    basic = run(stack, http_def("basic", url, auth={"type": "basic", "username": "svc", "secretRef": "password"}))
    assert basic["status"] == "COMPLETED"
    expected = "Basic " + base64.b64encode(f"svc:{PASSWORD}".encode()).decode()
    assert target.calls("/keyed")[-1].headers["authorization"] == expected


def test_the_submitting_request_id_and_trace_follow_the_task(stack: Stack, target: Target) -> None:
    """X-Request-Id and traceparent of the submit reach the pool's log lines for the task, its calls to the
    router, and the integration target (a new span of the same trace at each hop)."""
    url = target.on("/traced", _ok)
    define(stack, http_def("traced", url))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    r = submit(stack, "traced", headers={"X-Request-Id": "req-trace-1",
                                         "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert r.status_code == 201, r.text
    task = wait_status(stack, r.json()["id"])
    assert task["status"] == "COMPLETED", task["error"]

    seen = target.calls("/traced")[-1].headers
    assert seen["x-request-id"] == "req-trace-1"
    version, got_trace, span, _ = seen["traceparent"].split("-")
    assert (version, got_trace) == ("00", trace_id) and span != "00f067aa0ba902b7"

    def lines(name: str) -> list[dict[str, Any]]:
        text = (stack.logdir / f"{name}.log").read_text(errors="replace")
        return [json.loads(x) for x in text.splitlines()
                if x.startswith("{") and (task["id"] in x or "req-trace-1" in x)]

    pool = [x for x in lines("integration") if x.get("taskId") == task["id"]]
    assert {x["msg"] for x in pool} >= {"task started", "task finished"}
    assert all(x.get("requestId") == "req-trace-1" and x.get("traceId") == trace_id for x in pool), pool
    reports = [x for x in lines("router") if x.get("logger") == "taskexec.access" and x["route"].startswith(
        "/internal/v1/") and x.get("requestId") == "req-trace-1"]
    assert reports and all(x["traceId"] == trace_id for x in reports), "the pool's finish carried no trace"


def test_oauth2_client_credentials_token_cached_and_refreshed_once_on_401(stack: Stack, target: Target) -> None:
    counter = itertools.count(1)
    valid: set[str] = set()

    def token(seen: Seen) -> Reply:
        expected = "Basic " + base64.b64encode(f"client-1:{CLIENT_SECRET}".encode()).decode()
        if seen.headers.get("authorization") != expected or b"grant_type=client_credentials" not in seen.body:
            return Reply(401, {"error": "invalid_client"})
        value = f"tok-{next(counter)}"
        valid.add(value)
        return json_reply({"access_token": value, "token_type": "Bearer", "expires_in": 3600})

    def api(seen: Seen) -> Reply:
        given = (seen.headers.get("authorization") or "").removeprefix("Bearer ")
        return json_reply({"ok": True}) if given in valid else Reply(401, {"error": "expired"})

    token_url = target.on("/oauth/token", token)
    url = target.on("/oauth-api", api)
    definition = http_def("oauth", url, auth={"type": "oauth2_client_credentials", "tokenUrl": token_url,
                                              "clientId": "client-1", "secretRef": "client-secret"})
    assert run(stack, definition)["status"] == "COMPLETED"
    assert run(stack, definition)["status"] == "COMPLETED"
    assert len(target.calls("/oauth/token")) == 1, "the token was not cached"

    valid.clear()  # the provider revokes every token: the next call gets 401, refreshes once, succeeds
    third = run(stack, definition)
    assert third["status"] == "COMPLETED", third["error"]
    assert third["executionMetadata"]["tokenRefreshed"] is True
    assert len(target.calls("/oauth/token")) == 2

    bad = http_def("oauth-bad", url, auth={"type": "oauth2_client_credentials", "tokenUrl": token_url,
                                           "clientId": "someone-else", "secretRef": "client-secret"})
    failed = run(stack, bad)
    assert failed["status"] == "FAILED" and failed["error"]["code"] == "AUTHENTICATION_ERROR"
    assert CLIENT_SECRET not in str(failed)


def test_integration_service_invoke(stack: Stack, target: Target) -> None:
    target.on("/api/integrations/crm/invoke", lambda seen: json_reply({"received": seen.json()}))
    definition = {"id": "crm-lookup", "name": "crm", "type": "INTEGRATION",
                  "inputSchema": {"type": "object"},
                  "executionConfig": {"integrationId": "crm", "operation": "findCustomer",
                                      "params": {"email": "${input.email}"},
                                      "responseMapping": {"op": "$.received.operation",
                                                          "email": "$.received.params.email"}}}
    task = run(stack, definition, {"email": "ada@example.com"})
    assert task["status"] == "COMPLETED", task["error"]
    assert task["output"] == {"op": "findCustomer", "email": "ada@example.com"}
    body = target.calls("/api/integrations/crm/invoke")[-1].json()
    assert body == {"operation": "findCustomer", "params": {"email": "ada@example.com"}, "taskId": task["id"]}


@pytest.mark.parametrize("config, code, reason", [
    ({"request": {"url": "${input.base}/x"}}, "INTEGRATION_ERROR", "MISSING_INPUT"),
    ({"request": {"headers": {"X-Token": "${secrets.nope}"}}}, "INTEGRATION_ERROR", "UNKNOWN_SECRET"),
    ({"auth": {"type": "bearer", "secretRef": "nope"}}, "INTEGRATION_ERROR", "UNKNOWN_SECRET"),
])
def test_bad_templates_fail_precisely(stack: Stack, target: Target, config: dict[str, Any], code: str,
                                      reason: str) -> None:
    url = target.on("/never", _ok)
    before = len(target.calls("/never"))
    request = config.pop("request", {})
    definition = http_def(f"bad-{reason.lower()}-{len(str(config))}", request.pop("url", url), request=request,
                          retry=FAST_RETRY, **config)
    task = run(stack, definition)
    assert task["status"] == "FAILED", task
    assert task["error"]["code"] == code and task["error"]["details"]["reason"] == reason, task["error"]
    assert task["retryCount"] == 0
    assert len(target.calls("/never")) == before


def test_scheme_checked_at_definition_time_and_at_run_time(stack: Stack, target: Target) -> None:
    r = requests.post(f"{stack.url}/api/v1/tasks/definitions", headers=ADMIN, timeout=10,
                      json=http_def("ftp-def", "ftp://files.example.com/x"))
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "executionConfig.request.url"
    r = requests.post(f"{stack.url}/api/v1/tasks/definitions", headers=ADMIN, timeout=10,
                      json=http_def("env-def", target.url + "/${env.HOME}"))
    assert r.status_code == 422

    task = run(stack, http_def("templated-url", "${input.url}"), {"url": "file:///etc/passwd"})
    assert task["status"] == "FAILED"
    assert task["error"]["code"] == "INTEGRATION_ERROR" and task["error"]["details"]["reason"] == "BAD_URL"


def test_non_json_response_and_output_schema_failures(stack: Stack, target: Target, tmp_path: Path) -> None:
    html = target.on("/html", Reply(200, "<html>hi</html>", {"Content-Type": "text/html"}))
    task = run(stack, http_def("html", html, responseMapping={"id": "$.id"}))
    assert task["status"] == "FAILED"
    assert task["error"]["code"] == "INTEGRATION_ERROR"
    assert task["error"]["details"]["reason"] == "RESPONSE_NOT_JSON"
    assert "not JSON" in task["error"]["message"]

    raw = run(stack, http_def("html-raw", html))  # no mapping: the text itself is the output
    assert raw["status"] == "COMPLETED" and raw["output"] == "<html>hi</html>"

    url = target.on("/shape", _ok)
    missing = run(stack, http_def("shape-path", url, responseMapping={"id": "$.nothing.here"}))
    assert missing["status"] == "FAILED" and "$.nothing.here" in missing["error"]["message"]

    schema = {"type": "object", "properties": {"first": {"type": "string"}}, "required": ["first"]}
    wrong = run(stack, http_def("shape-schema", url, responseMapping={"first": "$.items[0].id"}, output_schema=schema))
    assert wrong["status"] == "FAILED"
    assert wrong["error"]["code"] == "OUTPUT_VALIDATION_ERROR"
    assert wrong["error"]["details"]["errors"][0]["field"] == "output.first"
    # the worker survived all of it
    assert run(stack, http_def("after-all", url))["status"] == "COMPLETED"
