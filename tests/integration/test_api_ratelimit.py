"""API rate limits per principal (real router app, real Redis; one test against real gunicorn processes).

Limits are per hour here: the windows are fixed (aligned to the epoch), and a test straddling a window's end
would see its count start again.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Blueprint, jsonify

from api.ratelimit import bulk
from api.security import require
from taskexec.core.constants import Permission
from tests import support
from tests.api_helpers import API, assert_envelope
from tests.conftest import auth
from tests.support import Stack

SUBMITTER = auth("sam", "submitter")
OTHER = auth("olivia", "submitter")
ADMIN = auth("root", "admin")
SERVICE = auth("pool-1", "service")


def make_app(env: dict[str, str], **overrides: Any) -> Any:
    from api import create_app
    from taskexec.core.config import Settings

    values = {k: v for k, v in env.items() if k.startswith(("TEL_", "DATABASE_URL", "CELERY_", "LOG_"))}
    settings = Settings(**{**values, "TEL_API_RATE_LIMIT": "5/h", "TEL_API_BULK_RATE_LIMIT": "2/h", **overrides})
    app = create_app(settings, start_dispatcher=False)
    bp = Blueprint("test_bulk", __name__)

    @bp.post(f"{API}/test-bulk")
    @bulk
    @require(Permission.EXECUTE)
    def bulk_route():  # stands in for a batch endpoint: the class is a declaration any route can carry
        return jsonify({"ok": True})

    app.register_blueprint(bp)
    return app


@pytest.fixture
def app(env: dict[str, str]) -> Iterator[Any]:
    app = make_app(env)
    yield app
    app.extensions["taskexec"].db.dispose()


def statuses(client: Any, n: int, headers: dict[str, str], path: str = f"{API}/tasks") -> list[int]:
    return [client.get(path, headers=headers).status_code for _ in range(n)]


def test_over_the_limit_is_429_with_retry_after_and_the_envelope(client: Any) -> None:
    answers = [client.get(f"{API}/tasks", headers=SUBMITTER) for _ in range(6)]
    assert [r.status_code for r in answers] == [200] * 5 + [429]
    assert [r.headers["X-RateLimit-Remaining"] for r in answers] == ["4", "3", "2", "1", "0", "0"]
    refused = answers[-1]
    assert_envelope(refused, 429, "RATE_LIMITED")
    assert refused.json["error"]["details"]["limit"] == 5 and refused.json["error"]["details"]["class"] == "standard"
    reset, retry_after = int(refused.headers["X-RateLimit-Reset"]), int(refused.headers["Retry-After"])
    now = time.time()
    assert now < reset <= now + 3601 and 1 <= retry_after <= 3600
    assert abs((reset - now) - retry_after) <= 2
    assert statuses(client, 1, OTHER) == [200]  # per principal: somebody else is not affected


def test_every_api_response_carries_the_headers(client: Any) -> None:
    for r in (client.get(f"{API}/tasks", headers=SUBMITTER),
              client.get(f"{API}/tasks/definitions/none", headers=SUBMITTER),  # 404
              client.post(f"{API}/tasks", json={}, headers=SUBMITTER),  # 400
              client.get(f"{API}/tasks"),  # 401: counted by client address
              client.get(f"{API}/no-such-route", headers=SUBMITTER)):
        assert r.headers["X-RateLimit-Limit"] == "5", (r.status_code, dict(r.headers))
        assert {"X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(r.headers.keys())
    assert "X-RateLimit-Limit" not in client.get("/health").headers  # outside /api/v1


def test_admin_and_service_are_counted_but_never_refused(client: Any) -> None:
    for who in (ADMIN, SERVICE):
        answers = [client.get(f"{API}/tasks/no-such-task", headers=who) for _ in range(8)]
        assert [r.status_code for r in answers] == [404] * 8
        assert answers[-1].headers["X-RateLimit-Remaining"] == "0"


def test_exempt_roles_are_configurable(env: dict[str, str]) -> None:
    app = make_app(env, TEL_API_RATE_LIMIT_EXEMPT_ROLES="submitter")
    try:
        client = app.test_client()
        assert statuses(client, 6, ADMIN)[-1] == 429
        assert statuses(client, 6, SUBMITTER) == [200] * 6
    finally:
        app.extensions["taskexec"].db.dispose()


def test_a_route_declared_bulk_has_its_own_lower_limit(client: Any) -> None:
    answers = [client.post(f"{API}/test-bulk", headers=SUBMITTER) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert answers[0].headers["X-RateLimit-Limit"] == "2"
    assert answers[2].json["error"]["details"]["class"] == "bulk"
    assert statuses(client, 1, SUBMITTER) == [200]  # the standard class is counted apart


def test_the_count_is_shared_by_router_processes_through_redis(env: dict[str, str]) -> None:
    first, second = make_app(env), make_app(env)  # two limiters, as in two processes: only Redis joins them
    try:
        a, b = first.test_client(), second.test_client()
        got = [(a if i % 2 else b).get(f"{API}/tasks", headers=SUBMITTER).status_code for i in range(7)]
        assert got == [200] * 5 + [429] * 2
    finally:
        for app in (first, second):
            app.extensions["taskexec"].db.dispose()


def test_without_redis_each_process_counts_on_its_own(env: dict[str, str]) -> None:
    app = make_app(env, CELERY_BROKER_URL=support.AMQP_URL)  # an AMQP broker and no TEL_REDIS_URL
    try:
        assert app.extensions["taskexec.ratelimit"].windows.client is None
        assert statuses(app.test_client(), 6, SUBMITTER) == [200] * 5 + [429]
    finally:
        app.extensions["taskexec"].db.dispose()


def test_an_unreachable_redis_lets_requests_through_uncounted(env: dict[str, str]) -> None:
    app = make_app(env, TEL_REDIS_URL=f"redis://127.0.0.1:{support.free_port()}/0")  # nothing listens there
    try:
        answers = [app.test_client().get(f"{API}/tasks", headers=SUBMITTER) for _ in range(7)]
        assert [r.status_code for r in answers] == [200] * 7
        assert all("X-RateLimit-Limit" not in r.headers for r in answers)
    finally:
        app.extensions["taskexec"].db.dispose()


@pytest.fixture
def limited_stack(env: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    s = Stack({**env, "TEL_API_RATE_LIMIT": "10/h", "TEL_ROUTER_WORKERS": "2"}, tmp_path)
    s.start_router()
    yield s
    s.stop()


def test_the_limit_holds_across_gunicorn_processes(limited_stack: Stack) -> None:
    """24 concurrent-ish requests over fresh connections reach both router processes; 10 are let through."""
    answers: Counter[int] = Counter()
    for _ in range(24):
        with requests.Session() as http:
            answers[http.get(f"{limited_stack.url}{API}/tasks", headers=SUBMITTER, timeout=10).status_code] += 1
    assert answers == {200: 10, 429: 14}
