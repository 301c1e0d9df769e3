"""Liveness, readiness (with PostgreSQL or Redis unreachable), /metrics, /docs and the OpenAPI document."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from taskexec.contract.schemas import SubmitIn
from tests.api_helpers import assert_envelope

AppFactory = Callable[..., Any]


@pytest.fixture
def make_app(env: dict[str, str]) -> Iterator[AppFactory]:
    """Build routers with some settings changed (an unreachable broker or database)."""
    from api import create_app
    from taskexec.core.config import Settings

    apps: list[Any] = []

    def build(**overrides: str) -> Any:
        values = {k: v for k, v in env.items() if k.startswith(("TEL_", "DATABASE_URL", "CELERY_", "LOG_"))}
        app = create_app(Settings(**{**values, **overrides}), start_dispatcher=False)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["taskexec"].db.dispose()


def test_health_needs_nothing(client: Any) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json["status"] == "UP"


@pytest.mark.parametrize("path", ["/ready", "/health/readiness"])
def test_ready_when_database_and_broker_are_up(client: Any, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200, r.json
    assert r.json["checks"] == {"database": "UP", "broker": "UP"}


@pytest.mark.parametrize(
    ("overrides", "down"),
    [
        ({"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}, "broker"),
        ({"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"}, "database"),
    ],
    ids=["broker-down", "database-down"],
)
def test_not_ready_when_a_dependency_is_unreachable(
    make_app: AppFactory, overrides: dict[str, str], down: str
) -> None:
    client = make_app(**overrides).test_client()
    started = time.monotonic()
    r = client.get("/ready")
    assert time.monotonic() - started < 15  # a probe must answer, not hang
    err = assert_envelope(r, 503, "UNAVAILABLE")
    assert err["details"][down] == "DOWN"
    assert client.get("/health").status_code == 200  # liveness is unaffected


def test_database_down_api_is_503_not_500(make_app: AppFactory) -> None:
    from tests.conftest import auth

    client = make_app(DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere").test_client()
    r = client.get("/api/v1/tasks", headers=auth("a", "admin"))
    assert_envelope(r, 503, "UNAVAILABLE")


def test_metrics_is_prometheus_text(client: Any) -> None:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    assert "# HELP" in r.get_data(as_text=True)


def test_docs_is_html(client: Any) -> None:
    r = client.get("/docs")
    assert r.status_code == 200 and r.mimetype == "text/html"
    assert "/openapi.json" in r.get_data(as_text=True)


def test_unknown_path_and_wrong_method_are_envelopes(client: Any, admin: dict[str, str]) -> None:
    assert_envelope(client.get("/api/v1/nothing-here", headers=admin), 404, "NOT_FOUND")
    assert_envelope(client.delete("/api/v1/tasks", headers=admin), 405, "VALIDATION_ERROR")


def test_unexpected_error_is_500_envelope_without_trace(app: Any) -> None:
    @app.get("/boom-for-test")
    def boom() -> None:
        raise RuntimeError("secret internals /srv/app.py line 3")

    r = app.test_client().get("/boom-for-test")
    assert_envelope(r, 500, "INTERNAL_ERROR")
    text = r.get_data(as_text=True)
    assert "secret internals" not in text and "Traceback" not in text


def resolve(spec: dict[str, Any], ref: str) -> Any:
    node: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_openapi_document(app: Any, client: Any) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json
    assert spec["openapi"].startswith("3.1") and spec["info"]["title"] and spec["info"]["version"]

    public = {
        re.sub(r"<(?:[^:>]+:)?[^>]+>", "{id}", rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
    }
    assert public <= set(spec["paths"]), public - set(spec["paths"])
    for path in ("/health", "/ready", "/health/readiness", "/metrics"):
        assert path in spec["paths"]

    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert method in {"get", "post", "put", "patch", "delete"}
            assert op["responses"], (path, method)
            if "{id}" in path:
                assert any(p["in"] == "path" and p["name"] == "id" for p in op["parameters"])
            for scheme in op.get("security", []):
                assert set(scheme) <= set(spec["components"]["securitySchemes"])

    # OpenAPI 3.1 schemas are JSON Schema 2020-12, and every $ref resolves.
    for schema in spec["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for ref in re.findall(r'"\$ref":\s*"([^"]+)"', r.get_data(as_text=True)):
        assert resolve(spec, ref) is not None, ref


def test_openapi_submit_schema_matches_the_model(client: Any) -> None:
    schema = client.get("/openapi.json").json["components"]["schemas"]["SubmitIn"]
    model_required = {f.alias or n for n, f in SubmitIn.model_fields.items() if f.is_required()}
    model_fields = {f.alias or n for n, f in SubmitIn.model_fields.items()}
    assert set(schema.get("required", [])) == model_required == {"taskDefinitionId"}
    assert set(schema["properties"]) == model_fields
    assert schema.get("additionalProperties") is False
