"""Hostile requests against the router: each test is one row of docs/security.md "What we tried" (except the
idle kept-alive connection, a property of the same real gunicorn router rather than an attack).

The first tests use the Flask app on a real PostgreSQL database; the others a real gunicorn router with a
MANUAL and an INTEGRATION pool (module-scoped), a local HTTP target standing in for an external service,
and the web pages in a real headless Chromium.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.api_helpers import API, GREET, assert_envelope, count, create_definition, submit
from tests.conftest import make_token
from tests.e2e.conftest import ARGS, CHROMIUM
from tests.e2e.helpers import ADMIN, define, wait_status
from tests.http_target import Seen, Target, json_reply
from tests.integration_support import http_def, module_stack, start_pool
from tests.support import Stack, wait_for

INJECTIONS = ["' OR '1'='1", "greet' --", "1; DROP TABLE task_instances; --", "\" OR \"\"=\"", "%", "_", "\\",
              "greet%", "gr_et", "' UNION SELECT id FROM api_keys --"]


def test_sql_injection_strings_in_filters_and_ids_are_plain_data(
        client: Any, admin: dict[str, str], database: str) -> None:
    create_definition(client, admin)
    submit(client, admin, workflowInstanceId="wf-1")
    submit(client, admin, workflowInstanceId="wf-2")
    for bad in INJECTIONS:
        q = quote(bad, safe="")
        for flt in ("taskDefinitionId", "workflowInstanceId", "assignee"):
            r = client.get(f"{API}/tasks?{flt}={q}", headers=admin)
            assert r.status_code == 200 and r.json["items"] == [], (flt, bad, r.json)
        r = client.get(f"{API}/tasks/definitions?search={q}", headers=admin)  # LIKE: % and _ are literal too
        assert r.status_code == 200 and r.json["items"] == [], (bad, r.json)
        assert_envelope(client.get(f"{API}/tasks/{q}", headers=admin), 404, "NOT_FOUND")
        assert_envelope(client.get(f"{API}/tasks/definitions/{q}", headers=admin), 404, "NOT_FOUND")
        r = client.post(f"{API}/tasks", json={"taskDefinitionId": bad, "input": {"name": "x"}}, headers=admin)
        assert r.status_code == 404, (bad, r.json)
    assert count(database, "task_instances") == 2 and count(database, "task_definitions") == 1
    assert [d["id"] for d in client.get(f"{API}/tasks/definitions?search=gre", headers=admin).json["items"]] == [
        "greet"]


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    t = Target()
    yield t
    t.close()


@pytest.fixture(scope="module")
def attack_stack(pg_template: None, tmp_path_factory: pytest.TempPathFactory, target: Target) -> Iterator[Stack]:
    with module_stack(tmp_path_factory.mktemp("attacks")) as (stack, _receiver):
        stack.start_worker("manual", concurrency=1)
        start_pool(stack, concurrency=2)
        yield stack


def raw_get(stack: Stack, path: str, redirects: int = 2) -> tuple[int, bytes]:
    """GET `path` exactly as written (no client-side normalisation of `..` or `%2e`), following redirects."""
    conn = http.client.HTTPConnection("127.0.0.1", int(stack.url.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.putheader("Authorization", ADMIN["Authorization"])
        conn.endheaders()
        resp = conn.getresponse()
        status, body, location = resp.status, resp.read(), resp.getheader("Location") or ""
    finally:
        conn.close()
    if 300 <= status < 400 and redirects:
        target = location.removeprefix(stack.url)
        assert target.startswith("/") and "://" not in target, f"redirected off the router: {location}"
        return raw_get(stack, target, redirects - 1)
    return status, body


TRAVERSALS = [
    "/api/v1/tasks/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/v1/tasks/definitions/..%2f..%2fapi%2fopenapi.py",
    "/api/v1/inbox/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/inbox/static/../../../../../../etc/passwd",
    "/inbox/static/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/dashboard/static/%2e%2e/%2e%2e/errors.py",
    "/dashboard/static/..%5c..%5cerrors.py",
    "/inbox/static/....//....//....//etc/passwd",
    "/inbox/static/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "/dashboard/static//etc/passwd",
]


@pytest.mark.slow
@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_reaches_no_file(attack_stack: Stack, path: str) -> None:
    status, body = raw_get(attack_stack, path)
    assert status in (400, 404), (status, body[:200])
    assert b"root:" not in body and b"import " not in body and b"def " not in body, body[:200]


@pytest.mark.slow
def test_an_idle_kept_alive_connection_is_not_closed_under_the_client(attack_stack: Stack) -> None:
    """gunicorn's default closes a connection idle for 2 s, racing a client (or proxy) that reuses it at that
    moment; the router keeps it 75 s, longer than common proxies' idle timeouts, so they close first."""
    conn = http.client.HTTPConnection("127.0.0.1", int(attack_stack.url.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.request("GET", "/health")
        first = conn.getresponse()
        first.read()
        assert first.status == 200 and conn.sock is not None
        port = conn.sock.getsockname()[1]
        time.sleep(3)
        conn.request("GET", "/health")
        again = conn.getresponse()
        again.read()
        assert again.status == 200
        assert conn.sock is not None and conn.sock.getsockname()[1] == port, "the same connection answered"
    finally:
        conn.close()


@pytest.mark.slow
def test_oversized_request_line_and_headers_get_the_json_envelope(attack_stack: Stack) -> None:
    """gunicorn refuses these before Flask runs; the client still gets the API's envelope, not an HTML page."""
    host = ("127.0.0.1", int(attack_stack.url.rsplit(":", 1)[1]))
    requests_sent = {
        414: f"GET {API}/tasks?workflowInstanceId={'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n",  # gunicorn 23 said 400
        431: f"GET {API}/tasks HTTP/1.1\r\nHost: x\r\n" + "".join(f"X-H{i}: v\r\n" for i in range(200)) + "\r\n",
    }
    for status, raw in requests_sent.items():
        conn = http.client.HTTPConnection(*host, timeout=10)
        conn.connect()
        assert conn.sock is not None
        conn.sock.sendall(raw.encode())
        resp = http.client.HTTPResponse(conn.sock)
        resp.begin()
        body = resp.read()
        conn.close()
        assert resp.status == status and resp.getheader("Content-Type") == "application/json", (resp.status, body)
        assert json.loads(body)["error"]["code"] == "VALIDATION_ERROR", body


@pytest.mark.slow
def test_crlf_in_input_cannot_inject_headers_or_query_into_integration_calls(
        attack_stack: Stack, target: Target) -> None:
    url = target.on("/hdr", lambda seen: json_reply({"ok": True}))
    define(attack_stack, http_def("hdr-inject", url, request={"headers": {"X-Customer": "${input.name}"},
                                                              "query": {"q": "${input.q}"}},
                                  retry={"maxRetries": 0, "retryInterval": 10, "backoffMultiplier": 1.0}))

    def run(inp: dict[str, str]) -> dict[str, Any]:
        r = requests.post(f"{attack_stack.url}{API}/tasks", json={"taskDefinitionId": "hdr-inject", "input": inp},
                          headers=ADMIN, timeout=10)
        assert r.status_code == 201, r.text
        return wait_status(attack_stack, r.json()["id"], timeout=60)

    before = len(target.calls("/hdr"))
    evil = run({"name": "ok\r\nX-Injected: yes", "q": "a"})
    assert evil["status"] == "FAILED", evil
    assert len(target.calls("/hdr")) == before, "a request with a CR/LF header value was sent"
    fine = run({"name": "ok", "q": "a&admin=1#frag"})
    assert fine["status"] == "COMPLETED", fine["error"]
    seen: Seen = target.calls("/hdr")[-1]
    assert seen.query == {"q": ["a&admin=1#frag"]} and "x-injected" not in seen.headers, seen
    assert all("x-injected" not in s.headers for s in target.calls("/hdr"))


XSS = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"


def _internal_fail(stack: Stack, task_id: str, message: str) -> None:
    """Act as a worker pool would (service API key): start the attempt and report it FAILED."""
    import psycopg

    with psycopg.connect(stack.env["DATABASE_URL"].replace("+psycopg", "")) as conn:
        token = conn.execute("SELECT dispatch_token FROM task_instances WHERE id = %s", (task_id,)).fetchone()
    key = {"X-API-Key": stack.service_key}
    r = requests.post(f"{stack.url}/internal/v1/tasks/{task_id}/start", headers=key, timeout=10,
                      json={"dispatchToken": token[0] if token else "", "workerId": "w-xss"})
    assert r.status_code == 200 and r.json()["job"], r.text
    r = requests.post(f"{stack.url}/internal/v1/tasks/{task_id}/finish", headers=key, timeout=10, json={
        "attempt": r.json()["job"]["attempt"], "status": "FAILED", "stderr": message,
        "error": {"code": "NON_ZERO_EXIT", "message": message}})
    assert r.status_code == 200, r.text


@pytest.fixture
def chromium() -> Iterator[Any]:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} missing: run scripts/bootstrap.sh (installs chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser.new_page(viewport={"width": 1440, "height": 1000})
        browser.close()


def _no_markup(page: Any) -> None:
    assert page.locator("img[src='x']").count() == 0, "user data was parsed as HTML"
    assert page.evaluate("() => document.title") != "pwned"
    assert page.evaluate("() => [...document.scripts].every(s => s.src)"), "an inline script was inserted"


@pytest.mark.slow
@pytest.mark.browser
def test_stored_xss_is_shown_as_text_in_the_inbox_and_dashboard(attack_stack: Stack, chromium: Any) -> None:
    suffix = uuid.uuid4().hex[:6]
    define(attack_stack, {"id": f"xss-review-{suffix}", "name": XSS, "description": XSS, "type": "MANUAL",
                          "executionConfig": {"assignment": {"role": "operator"}}})
    define(attack_stack, {**GREET, "id": f"xss-fail-{suffix}"})
    manual = requests.post(f"{attack_stack.url}{API}/tasks", headers=ADMIN, timeout=10, json={
        "taskDefinitionId": f"xss-review-{suffix}", "input": {"note": XSS}, "workflowInstanceId": XSS}).json()["id"]
    failed = requests.post(f"{attack_stack.url}{API}/tasks", headers=ADMIN, timeout=10, json={
        "taskDefinitionId": f"xss-fail-{suffix}", "input": {"name": XSS}}).json()["id"]
    wait_status(attack_stack, manual, {"ASSIGNED"}, timeout=30)
    _internal_fail(attack_stack, failed, XSS)
    for page_path in ("/inbox", "/dashboard"):
        csp = requests.get(attack_stack.url + page_path, timeout=10).headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp

    page = chromium
    page.goto(f"{attack_stack.url}/inbox")
    page.fill("#token", make_token(XSS, ("operator",)))  # the token's own `sub` is shown too
    page.click("#signin")
    page.wait_for_selector(f"li[data-task-id='{manual}']").click()
    wait_for(lambda: page.inner_text("#d-name") == XSS, 10, what="the name shown as text")
    assert page.inner_text("#d-desc") == XSS and XSS in page.inner_text("#d-input")
    assert page.inner_text("#who-name") == XSS
    _no_markup(page)

    page.goto(f"{attack_stack.url}/dashboard")
    page.fill("#token", make_token("olga", ("admin",)))
    page.click("#signin")
    row = page.wait_for_selector(f"#failures-table tr[data-task-id='{failed}']", timeout=15000)
    assert XSS in row.inner_text()
    page.click(f"#failures-table tr[data-task-id='{failed}'] a")
    page.wait_for_selector("#t-status.FAILED")
    script = "<script>document.title='pwned'</script>"  # shown as pretty-printed JSON: quotes are escaped
    assert script in page.inner_text("#t-error") and script in page.inner_text("#t-input")
    _no_markup(page)
