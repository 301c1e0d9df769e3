"""Property-based fuzzing of the router's public API from its own `/openapi.json` (schemathesis).

The router runs as a real gunicorn process against a real database; schemathesis generates valid and
invalid requests for every operation in the document (coverage phase: boundary values and undeclared
methods; fuzzing phase: random data) and checks that none is a 5xx and that every response (status code,
content type, headers, body) matches what the document declares. Seeded resources let operations with an
`{id}` reach their logic, and the run fails if some operation never got past its validation.

It also checks what a fuzzer is for besides crashes: invalid data (schemathesis's negative generation
mode) must be refused with a 4xx (`negative_data_rejection`), and authentication must be enforced: for
every operation the document says needs credentials, the first request that reached its view (2xx, 400,
409 or 422) is sent again without credentials, with a garbage bearer token, with `Basic` and with an
unknown API key, and each must get 401 `UNAUTHORIZED` (schemathesis's own `ignored_auth` probes the same
with 401 or 403).
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import psycopg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.api_helpers import APPROVE, GREET
from tests.conftest import auth
from tests.integration_support import module_stack
from tests.support import Stack, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(480)]  # every operation, under load

ADMIN = auth("fuzzer", "admin")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, unsupported_method, negative_data_rejection, ignored_auth]
# Sent instead of the caller's credentials to every operation that needs them: each must be a 401.
NOT_CREDENTIALS = {"none": {}, "garbage bearer": {"Authorization": "Bearer not.a.jwt"},
                   "basic": {"Authorization": "Basic YWRtaW46YWRtaW4="}, "unknown API key": {"X-API-Key": "tel_nope"}}
MAX_EXAMPLES = 25
# Operations whose logic the run must reach (a 2xx at least once); registering a definition is left out: its
# executionConfig is free-form in the document, so generated ones are (rightly) refused with 422.
REACHED = [("GET", p) for p in ("/api/v1/tasks", "/api/v1/tasks/{id}", "/api/v1/tasks/{id}/logs",
                                 "/api/v1/tasks/{id}/events", "/api/v1/tasks/definitions",
                                 "/api/v1/tasks/definitions/{id}", "/api/v1/inbox", "/api/v1/inbox/{id}",
                                 "/api/v1/deadletters", "/api/v1/stats/overview", "/health", "/ready", "/metrics")] + [
    ("POST", f"/api/v1/tasks{p}") for p in ("", "/{id}/cancel", "/{id}/retry", "/{id}/claim", "/{id}/complete",
                                            "/{id}/reassign")] + [("POST", "/api/v1/deadletters/{id}/redrive")]

schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(scope="module")
def fuzz_stack(pg_template: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One router process (and database) for the whole module: fuzzing needs many requests, not many routers."""
    # Rate limits have their own tests (tests/integration/test_api_ratelimit.py); here a flood of anonymous probes
    # from one address would be answered 429 before authentication is tried, which hides what fuzzing checks.
    with module_stack(tmp_path_factory.mktemp("fuzz"), TEL_API_RATE_LIMIT="off",
                      TEL_API_BULK_RATE_LIMIT="off") as (stack, _receiver):
        stack.start_worker("manual", concurrency=1)  # manual tasks get ASSIGNED: claim/complete reach their logic
        yield stack


def _post(stack: Stack, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = requests.post(f"{stack.url}/api/v1{path}", json=body, headers=ADMIN, timeout=10)
    assert r.status_code in (200, 201), r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def real_ids(fuzz_stack: Stack) -> dict[str, list[str]]:
    """Existing resources per operation, so that operations with an `{id}` reach their logic, not only a 404."""
    _post(fuzz_stack, "/tasks/definitions", GREET)
    _post(fuzz_stack, "/tasks/definitions", APPROVE)
    _post(fuzz_stack, "/tasks/definitions", {**GREET, "id": "greet-once", "retryPolicy": {"maxRetries": 0}})
    automated = [_post(fuzz_stack, "/tasks", {"taskDefinitionId": "greet" if i < 3 else "greet-once",
                                              "input": {"name": f"n{i}"}})["id"] for i in range(7)]
    manual = [_post(fuzz_stack, "/tasks", {"taskDefinitionId": "approve-order", "input": {"n": i}})["id"]
              for i in range(6)]
    wait_for(lambda: all(_get(fuzz_stack, t)["status"] == "ASSIGNED" for t in manual), 30, what="manual ASSIGNED")
    for task_id in automated[3:]:
        _fail(fuzz_stack, task_id)  # no retries left: FAILED, and a dead letter
    letters = requests.get(f"{fuzz_stack.url}/api/v1/deadletters", headers=ADMIN, timeout=10).json()["items"]
    assert len(letters) == 4, letters
    return {"definitions": ["greet", "approve-order", "greet-once"], "read": automated + manual,
            "cancel": automated[:3], "retry": automated[3:5],
            "redrive": [d["id"] for d in letters if d["taskId"] in automated[5:]],
            "claim": manual[:3], "complete": manual[1:4], "reassign": manual[4:], "inbox": manual}


def _get(stack: Stack, task_id: str) -> dict[str, Any]:
    r = requests.get(f"{stack.url}/api/v1/tasks/{task_id}", headers=ADMIN, timeout=10)
    return r.json()  # type: ignore[no-any-return]


def _fail(stack: Stack, task_id: str) -> None:
    """Report an attempt FAILED through the internal API, as the automated pool would (no Docker needed)."""
    with psycopg.connect(stack.env["DATABASE_URL"].replace("+psycopg", "")) as conn:
        row = conn.execute("SELECT dispatch_token FROM task_instances WHERE id = %s", (task_id,)).fetchone()
    key = {"X-API-Key": stack.service_key}
    r = requests.post(f"{stack.url}/internal/v1/tasks/{task_id}/start", headers=key, timeout=10,
                      json={"dispatchToken": row[0] if row else "", "workerId": "w-fuzz"})
    assert r.status_code == 200 and r.json()["job"], r.text
    r = requests.post(f"{stack.url}/internal/v1/tasks/{task_id}/finish", headers=key, timeout=10, json={
        "attempt": r.json()["job"]["attempt"], "status": "FAILED", "retry": True,  # retries spent: dead letter
        "error": {"code": "NON_ZERO_EXIT", "message": "boom"}})
    assert r.status_code == 200 and r.json()["status"] == "FAILED", r.text


@pytest.fixture(scope="module")
def api_schema(fuzz_stack: Stack, real_ids: dict[str, list[str]]) -> Any:
    config = schemathesis.Config.from_dict({"seed": 20240601, "generation": {"deterministic": True}})
    return schemathesis.openapi.from_url(f"{fuzz_stack.url}/openapi.json", config=config, timeout=10)


def _existing_id(path: str, real_ids: dict[str, list[str]], pick: int) -> str:
    if path.startswith("/api/v1/tasks/definitions/"):
        pool = real_ids["definitions"]
    elif path.startswith("/api/v1/inbox/"):
        pool = real_ids["inbox"]
    else:
        pool = real_ids.get(path.rsplit("/", 1)[-1], real_ids["read"])  # cancel, retry, claim, ... or a read
    return pool[pick % len(pool)]


@pytest.fixture(scope="module")
def protected(fuzz_stack: Stack) -> dict[tuple[str, str], bool]:
    """(METHOD, path) -> whether /openapi.json says the operation needs credentials."""
    doc = requests.get(f"{fuzz_stack.url}/openapi.json", timeout=10).json()
    return {(m.upper(), p): bool(op.get("security", doc.get("security", [])))
            for p, ops in doc["paths"].items() for m, op in ops.items()}


@pytest.fixture(scope="module")
def auth_probed() -> set[tuple[str, str]]:
    return set()


@pytest.fixture
def tally(protected: dict[tuple[str, str], bool],
          auth_probed: set[tuple[str, str]]) -> Iterator[Counter[tuple[str, str, int]]]:
    """(method, path, status) of every fuzzed call; afterwards, every operation must have succeeded at least once,
    and every one that needs credentials must have been probed without them."""
    seen: Counter[tuple[str, str, int]] = Counter()
    yield seen
    ok = {(m, p) for m, p, status in seen if status < 300}
    missing = [op for op in REACHED if op not in ok]
    assert not missing, f"fuzzing never got a 2xx from {missing}: the run did not reach their logic"
    unprobed = [op for op, needs in protected.items() if needs and op not in auth_probed]
    assert not unprobed, f"operations never probed without credentials: {unprobed}"


def assert_needs_credentials(case: Any, base_url: str) -> None:
    """The same request without valid credentials, every way: 401 with the error envelope."""
    kwargs = case.as_transport_kwargs(base_url=base_url, headers=ADMIN)
    headers = {k: v for k, v in kwargs.pop("headers").items() if k.lower() not in ("authorization", "x-api-key")}
    for name, creds in NOT_CREDENTIALS.items():
        r = requests.request(**kwargs, headers={**headers, **creds}, timeout=15)
        assert r.status_code == 401, (name, case.method, case.formatted_path, r.status_code, r.text[:300])
        assert r.json()["error"]["code"] == "UNAUTHORIZED", (name, r.text[:300])


@schema.parametrize()
@hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: Any, fuzz_stack: Stack, real_ids: dict[str, list[str]],
                                              tally: Counter[tuple[str, str, int]],
                                              protected: dict[tuple[str, str], bool],
                                              auth_probed: set[tuple[str, str]]) -> None:
    """No 5xx; status, content type, headers and body of every response as /openapi.json declares them;
    invalid data refused with a 4xx; no credentials or bad ones: 401."""
    # 3 in 4 cases use an existing resource, picked from the generated data (no `@schema.given`: it would switch
    # off the coverage phase), so the run stays deterministic.
    pick = zlib.crc32(repr((case.path_parameters, case.body)).encode()) % 8
    if "id" in (case.path_parameters or {}) and pick < 6:
        case.path_parameters["id"] = _existing_id(case.path, real_ids, pick)
    if isinstance(case.body, dict) and "taskDefinitionId" in case.body and pick < 6:
        case.body["taskDefinitionId"] = real_ids["definitions"][pick % 2]
    response = case.call_and_validate(base_url=fuzz_stack.url, headers=ADMIN, checks=CHECKS, timeout=15)
    op = (case.method.upper(), case.path)
    tally[(*op, response.status_code)] += 1
    # probe once per operation, with a request that got past routing and authentication into the view
    if (response.status_code < 300 or response.status_code in (400, 409, 422)) and protected.get(op) \
            and op not in auth_probed:
        assert_needs_credentials(case, fuzz_stack.url)
        auth_probed.add(op)
