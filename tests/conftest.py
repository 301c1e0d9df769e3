"""Shared fixtures: a migrated template database cloned per test, settings, clients, tokens."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import flask
import pytest
from flask.testing import FlaskClient

from tests import support


class BufferedClient(FlaskClient):
    """Flask's test client, reading every response whole and closing it (`buffered=True`): a file response
    (static pages, Swagger UI's assets) otherwise keeps its file open until garbage collection, a
    ResourceWarning that `filterwarnings = error` turns into a failure. No route of ours streams."""

    def open(self, *args: Any, buffered: bool = True, **kwargs: Any) -> Any:
        return super().open(*args, buffered=buffered, **kwargs)


flask.Flask.test_client_class = BufferedClient  # every app the tests make, also through app.test_client()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The Docker engine of the tests (started by scripts/services.sh); closed at the end of the session."""
    client = docker.from_env(timeout=120)
    try:
        assert client.ping(), "no Docker engine: run scripts/services.sh start"
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[None]:
    support.create_template()
    yield
    support.drop_template()


@pytest.fixture
def database(pg_template: None) -> Iterator[str]:
    name = support.clone_database()
    yield name
    support.drop_database(name)


@pytest.fixture
def env(database: str) -> dict[str, str]:
    return support.base_env(database, prefix="t" + uuid.uuid4().hex[:8])


@pytest.fixture
def settings(env: dict[str, str]) -> Any:
    from taskexec.core.config import Settings

    return Settings(**{k: v for k, v in env.items() if k.startswith(("TEL_", "DATABASE_URL", "CELERY_", "LOG_"))})


@pytest.fixture
def app(settings: Any) -> Iterator[Any]:
    from api import create_app

    app = create_app(settings, start_dispatcher=False)
    yield app
    app.extensions["taskexec"].db.dispose()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


def make_token(sub: str = "alice", roles: tuple[str, ...] = ("admin",), **kw: Any) -> str:
    from taskexec.core.config import Settings
    from taskexec.store.auth import issue_token

    return issue_token(Settings(TEL_JWT_SECRET=support.JWT_SECRET), sub, list(roles), **kw)  # type: ignore[call-arg]


def auth(sub: str = "alice", *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(sub, roles or ('admin',))}"}


@pytest.fixture
def admin() -> dict[str, str]:
    return auth("admin", "admin")


@pytest.fixture
def receiver() -> Iterator[support.Receiver]:
    r = support.Receiver()
    yield r
    r.close()


@pytest.fixture
def notifier() -> Iterator[support.Receiver]:
    """A real HTTP server standing in for the notification service (a third party)."""
    r = support.Receiver()
    yield r
    r.close()


@pytest.fixture
def stack(env: dict[str, str], receiver: support.Receiver, tmp_path: Path, request: pytest.FixtureRequest
          ) -> Iterator[support.Stack]:
    """Router (real gunicorn process) with an orchestrator receiver; tests start the pools they need."""
    s = support.Stack({**env, "WORKFLOW_ORCHESTRATOR_URL": receiver.url}, tmp_path)
    s.start_router()
    yield s
    s.stop()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        for name, proc in s.procs.items():
            print(f"----- {name} log (tail)\n{proc.text()[-4000:]}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep
