"""Credentials on every endpoint: missing or bad is 401, not allowed is 403; API keys and revocation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from taskexec.core.constants import ROLE_PERMISSIONS, Permission
from taskexec.store.auth import create_api_key, revoke_api_key
from taskexec.store.db import Database
from tests.api_helpers import API, assert_envelope, create_definition, sql, submit
from tests.conftest import auth, make_token
from tests.support import wait_for

SAMPLE_ID = "00000000-0000-0000-0000-000000000000"


def protected(app: Any) -> list[tuple[str, str, str]]:
    """(method, concrete path, permission or "" for any credential) for every /api/v1 and /internal/v1 endpoint."""
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(("/api/", "/internal/")):
            continue
        view = app.view_functions[rule.endpoint]
        permission = getattr(view, "permission", None)
        assert permission is not None or getattr(view, "auth_only", False), f"{rule.rule} is not protected"
        path = re.sub(
            r"<(?:[^:>]+:)?([^>]+)>", lambda m: "outbox" if m.group(1) == "name" else SAMPLE_ID, rule.rule
        )
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, path, permission.value if permission else ""))
    return out


def call(client: Any, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    return client.open(path, method=method, headers=headers or {}, json={} if method == "POST" else None)


@pytest.fixture
def db(env: dict[str, str]) -> Iterator[Database]:
    d = Database(env["DATABASE_URL"])
    yield d
    d.dispose()


def test_every_endpoint_needs_credentials(app: Any, client: Any) -> None:
    endpoints = protected(app)
    assert len(endpoints) >= 15
    for method, path, _ in endpoints:
        for headers in (
            {},
            {"Authorization": "Basic YWxpY2U6cHc="},
            {"Authorization": "Bearer not-a-jwt"},
            {"X-API-Key": "tel_unknown"},
        ):
            assert_envelope(call(client, method, path, headers), 401, "UNAUTHORIZED")


def test_every_endpoint_refuses_a_principal_without_the_permission(app: Any, client: Any) -> None:
    for method, path, permission in protected(app):
        if not permission:  # any valid credential will do (GET /api/v1/me)
            continue
        assert_envelope(call(client, method, path, auth("nobody", "no-such-role")), 403, "FORBIDDEN")
        lacking = next(
            (
                r
                for r in ("operator", "service", "submitter", "developer")
                if Permission(permission) not in ROLE_PERMISSIONS[r]
            ),
            None,
        )
        if lacking is None:  # tasks:read: every role holds it
            continue
        err = assert_envelope(call(client, method, path, auth("eve", lacking)), 403, "FORBIDDEN")
        assert err["details"] == {"permission": permission}, (method, path, lacking)


def test_expired_and_foreign_tokens_are_401(client: Any) -> None:
    expired = {"Authorization": f"Bearer {make_token('alice', ('admin',), ttl=-30)}"}
    err = assert_envelope(client.get(f"{API}/tasks", headers=expired), 401, "UNAUTHORIZED")
    assert "expired" in err["message"]
    import jwt

    forged = jwt.encode(
        {"sub": "mallory", "roles": ["admin"], "iss": "auth-service", "exp": 9999999999},
        "some-other-secret-0123456789abcdefghij",
        algorithm="HS256",
    )
    assert_envelope(
        client.get(f"{API}/tasks", headers={"Authorization": f"Bearer {forged}"}), 401, "UNAUTHORIZED"
    )


def test_api_key_works_until_revoked(client: Any, db: Database, database: str) -> None:
    with db.session() as s:
        row, key = create_api_key(s, "ci-bot", ["developer"])
        key_id = row.id
    assert key.startswith("tel_")
    stored = sql(database, "SELECT key_hash, roles FROM api_keys WHERE id = %s", key_id)[0]
    assert key not in stored[0] and stored[1] == ["developer"]  # only the hash is stored

    headers = {"X-API-Key": key}
    create_definition(client, headers)
    task_id = submit(client, headers)
    events = client.get(f"{API}/tasks/{task_id}/events", headers=headers).json["items"]
    assert events[0]["actor"] == "apikey:ci-bot"

    with db.session() as s:
        revoke_api_key(s, key_id)
    assert_envelope(client.get(f"{API}/tasks", headers=headers), 401, "UNAUTHORIZED")


def test_verified_api_keys_are_remembered_and_forgotten_on_any_revocation(env: dict[str, str], db: Database,
                                                                          database: str) -> None:
    """A router process remembers the keys it verified (no query per request) while it listens for changes to
    `api_keys`; a revocation anywhere (here plain SQL, as another process would) is honoured at once, and
    without its listener a process checks every key."""
    from sqlalchemy import event

    from api import create_app
    from taskexec.core.config import Settings

    settings = Settings(**{k: v for k, v in env.items()  # type: ignore[arg-type]
                           if k.startswith(("TEL_", "DATABASE_URL", "CELERY_", "LOG_"))})
    assert settings.api_key_cache_s > 0  # the default
    app = create_app(settings, start_dispatcher=False)
    rt = app.extensions["taskexec"]
    client = app.test_client()
    lookups = [0]
    event.listen(rt.db.engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: lookups.__setitem__(0, lookups[0] + ("api_keys" in statement)))
    try:
        wait_for(rt.keywatch.listening.is_set, 10, 0.05, what="the api key watch listening")
        with db.session() as s:
            first, key1 = create_api_key(s, "cached-1", ["operator"])
            second, key2 = create_api_key(s, "cached-2", ["operator"])
            ids = (first.id, second.id)
        for key in (key1, key2, key1, key2):
            assert client.get(f"{API}/tasks", headers={"X-API-Key": key}).status_code == 200
        assert lookups[0] == 2  # each key checked once, then remembered

        sql(database, "UPDATE api_keys SET revoked_at = now() WHERE id = %s", ids[0])
        wait_for(lambda: client.get(f"{API}/tasks", headers={"X-API-Key": key1}).status_code == 401, 10, 0.05,
                 what="the revocation honoured")
        assert client.get(f"{API}/tasks", headers={"X-API-Key": key2}).status_code == 200  # checked again: valid
        with db.session() as s:
            revoke_api_key(s, ids[1])
        assert_envelope(client.get(f"{API}/tasks", headers={"X-API-Key": key2}), 401, "UNAUTHORIZED")

        rt.keywatch.stop()
        rt.keywatch.join(10)
        with db.session() as s:
            _, key3 = create_api_key(s, "cached-3", ["operator"])
        before = lookups[0]
        for _ in range(3):
            assert client.get(f"{API}/tasks", headers={"X-API-Key": key3}).status_code == 200
        assert lookups[0] - before == 3  # not listening: every request checks its key
    finally:
        rt.keywatch.stop()
        rt.db.dispose()


def test_api_key_roles_are_enforced(client: Any, db: Database) -> None:
    with db.session() as s:
        _, key = create_api_key(s, "reader", ["operator"])
    assert_envelope(
        client.post(f"{API}/tasks/definitions", json={}, headers={"X-API-Key": key}), 403, "FORBIDDEN"
    )
    with pytest.raises(ValueError), db.session() as s:
        create_api_key(s, "bad", ["superuser"])


def test_internal_endpoints_need_the_service_role(
    client: Any, admin: dict[str, str], db: Database, database: str
) -> None:
    create_definition(client, admin)
    task_id = submit(client, admin)
    token = sql(database, "SELECT dispatch_token FROM task_instances WHERE id = %s", task_id)[0][0]
    body = {"dispatchToken": token, "workerId": "w1"}
    start = f"/internal/v1/tasks/{task_id}/start"
    for role in ("submitter", "developer", "operator"):
        assert_envelope(client.post(start, json=body, headers=auth("sam", role)), 403, "FORBIDDEN")
    assert sql(database, "SELECT status FROM task_instances")[0][0] == "PENDING"
    with db.session() as s:
        _, key = create_api_key(s, "pool", ["service"])
    r = client.post(start, json=body, headers={"X-API-Key": key})
    assert r.status_code == 200 and r.json["job"] is not None
    assert (
        client.get(f"/internal/v1/tasks/{task_id}/status", headers=auth("svc", "service")).json["status"]
        == "RUNNING"
    )


def test_public_ops_endpoints_need_no_credentials(client: Any) -> None:
    for path in ("/health", "/metrics", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path


def test_jwt_secret_rotation_keeps_old_tokens_working_for_the_grace_period(env: dict[str, str]) -> None:
    """The router restarted with a new secret still serves clients holding tokens signed with the old one
    until TEL_JWT_SECRET_PREVIOUS_UNTIL; after that they get 401 and fetch new ones."""
    from datetime import UTC, datetime, timedelta

    from api import create_app
    from taskexec.core.config import Settings

    old_token = make_token("alice", ("admin",))  # signed with the secret the router had so far
    new_secret = "rotated-secret-0123456789abcdef-0123456"
    base = {k: v for k, v in env.items() if k.startswith(("TEL_", "DATABASE_URL", "CELERY_"))}

    def router(until: datetime) -> Any:
        settings = Settings(**{**base, "TEL_JWT_SECRET": new_secret, "TEL_JWT_SECRET_PREVIOUS": env["TEL_JWT_SECRET"],
                               "TEL_JWT_SECRET_PREVIOUS_UNTIL": until.isoformat()})
        return create_app(settings, start_dispatcher=False), settings

    app, settings = router(datetime.now(UTC) + timedelta(minutes=10))
    from taskexec.store.auth import issue_token

    new_token = issue_token(settings, "bob", ["admin"])
    client = app.test_client()
    for token in (old_token, new_token):
        assert client.get(f"{API}/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    app.extensions["taskexec"].db.dispose()

    app, _ = router(datetime.now(UTC) - timedelta(seconds=1))  # the grace period is over
    client = app.test_client()
    assert_envelope(client.get(f"{API}/tasks", headers={"Authorization": f"Bearer {old_token}"}), 401, "UNAUTHORIZED")
    assert client.get(f"{API}/tasks", headers={"Authorization": f"Bearer {new_token}"}).status_code == 200
    app.extensions["taskexec"].db.dispose()
