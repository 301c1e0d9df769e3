"""Load shedding: a queue over its thresholds refuses LOW (then MEDIUM) submissions, never HIGH or CRITICAL.

Real router app on PostgreSQL and a real Redis broker; no worker consumes, so every accepted submission is a
message waiting in its queue and the depth is exactly what the test submitted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api_helpers import API, assert_envelope, create_definition
from tests.conftest import auth
from tests.integration_support import http_def
from tests.support import wait_for

LOW_AT, MEDIUM_AT = 3, 12


@pytest.fixture
def app(env: dict[str, str]) -> Iterator[Any]:
    from api import create_app
    from taskexec.core.config import Settings

    s = Settings(**{k: v for k, v in env.items() if k.startswith(("TEL_", "DATABASE_URL", "CELERY_", "LOG_"))},
                 TEL_SHED_LOW_QUEUE_DEPTH=LOW_AT, TEL_SHED_MEDIUM_QUEUE_DEPTH=MEDIUM_AT, TEL_SHED_CHECK_INTERVAL=0.1,
                 TEL_SHED_RETRY_AFTER=7)
    app = create_app(s, start_dispatcher=False)
    yield app
    app.extensions["taskexec"].db.dispose()


def post(client: Any, headers: dict[str, str], priority: str, def_id: str = "greet") -> Any:
    return client.post(f"{API}/tasks", json={"taskDefinitionId": def_id, "input": {"name": "Ada"},
                                             "priority": priority}, headers=headers)


def fill_until_refused(client: Any, admin: dict[str, str], priority: str) -> Any:
    """Submit `priority` tasks until one is refused (those accepted meanwhile only deepen the queue)."""
    def refused() -> Any:
        r = post(client, admin, priority)
        assert r.status_code in (201, 503), r.json
        return r if r.status_code == 503 else None

    return wait_for(refused, 20, interval=0.05, what=f"{priority} submissions refused")


def test_low_then_medium_are_shed_while_high_and_critical_pass(
        client: Any, admin: dict[str, str], settings: Any) -> None:
    create_definition(client, admin)  # AUTOMATED: the automated queue
    create_definition(client, admin, http_def("elsewhere", "http://127.0.0.1:9/never"))  # the integration queue
    for _ in range(LOW_AT + 1):
        assert post(client, admin, "HIGH").status_code == 201

    refused = fill_until_refused(client, admin, "LOW")
    error = assert_envelope(refused, 503, "UNAVAILABLE")
    assert refused.headers["Retry-After"] == "7"
    assert error["details"]["queue"] == settings.queue_automated and error["details"]["threshold"] == LOW_AT
    assert error["details"]["depth"] > LOW_AT and error["details"]["priority"] == "LOW"
    for priority in ("MEDIUM", "HIGH", "CRITICAL"):
        assert post(client, admin, priority).status_code == 201, priority
    assert post(client, admin, "LOW", "elsewhere").status_code == 201  # another queue is not overloaded
    assert post(client, auth("nobody", "operator"), "LOW").status_code == 403  # permissions come first
    assert client.post(f"{API}/tasks", json={"taskDefinitionId": "greet", "input": {}, "priority": "LOW"}
                       ).status_code == 401

    while True:  # deepen the queue past the MEDIUM threshold with HIGH tasks
        depth = fill_until_refused(client, admin, "LOW").json["error"]["details"]["depth"]
        if depth > MEDIUM_AT:
            break
        assert post(client, admin, "HIGH").status_code == 201
    refused = fill_until_refused(client, admin, "MEDIUM")
    assert refused.json["error"]["details"]["threshold"] == MEDIUM_AT
    for priority in ("HIGH", "CRITICAL"):
        assert post(client, admin, priority).status_code == 201, priority


def test_nothing_is_shed_below_the_thresholds(client: Any, admin: dict[str, str]) -> None:
    create_definition(client, admin)
    assert [post(client, admin, "LOW").status_code for _ in range(LOW_AT)] == [201] * LOW_AT
