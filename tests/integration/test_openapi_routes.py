"""`/openapi.json` is the app's real routes: every Flask rule under /api/v1 (and the operational ones) is in
the document with the same methods, parameters, bodies and responses it was declared with, and nothing else
is; each view parses the very query and body models it declares; `/docs` serves Swagger UI from the package.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from api.openapi import hook_statuses, spec_path
from api.routing import operations_of

PUBLIC_OPS = {"/health", "/ready", "/health/readiness", "/metrics"}
IGNORED_METHODS = {"HEAD", "OPTIONS"}


def served(app: Any) -> dict[tuple[str, str], Any]:
    """(METHOD, OpenAPI path) -> Flask rule, for every public API and operational rule the app serves."""
    out = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/") or rule.rule in PUBLIC_OPS:
            for method in rule.methods - IGNORED_METHODS:
                out[(method, spec_path(rule.rule))] = rule
    return out


def documented(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}


def test_every_served_rule_is_documented_and_nothing_else(app: Any, client: Any) -> None:
    spec = client.get("/openapi.json").json
    routes = served(app)
    assert len(routes) >= 24
    assert set(routes) - documented(spec) == set(), "served but missing from /openapi.json"
    assert documented(spec) - set(routes) == set(), "in /openapi.json but not served"


def test_parameters_bodies_and_responses_are_the_declared_ones(app: Any, client: Any) -> None:
    spec = client.get("/openapi.json").json
    for (method, path), rule in served(app).items():
        op = operations_of(app.view_functions[rule.endpoint])[method]
        doc = spec["paths"][path][method.lower()]
        params = {(p["in"], p["name"]) for p in doc.get("parameters", [])}
        expected = {("path", "id") for _ in rule.arguments}
        expected |= {("header", h.name) for h in op.headers}
        if op.query is not None:
            expected |= {("query", f.alias or name) for name, f in op.query.model_fields.items()}
        assert params == expected, (method, path)
        assert len(rule.arguments) <= 1 and (not rule.arguments or "{id}" in path), rule.rule
        statuses = {int(s) for s in doc["responses"]}
        errors = set(op.error_statuses(bool(rule.arguments))) | hook_statuses(rule, app.view_functions[rule.endpoint])
        assert statuses == set(op.success_statuses()) | errors, (method, path)
        for status in errors:
            assert doc["responses"][str(status)]["content"]["application/json"]["schema"]["$ref"].endswith(
                "/ErrorEnvelope")
        if op.response is not None:
            ref = doc["responses"][str(op.status)]["content"][op.content_type]["schema"]["$ref"]
            assert ref == f"#/components/schemas/{op.response.__name__}", (method, path)
        if op.body is None:
            assert "requestBody" not in doc, (method, path)
        else:
            ref = doc["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref == f"#/components/schemas/{op.body.__name__}", (method, path)
        assert (doc["security"] != []) == op.auth, (method, path)


def test_each_view_parses_the_models_it_declares(app: Any) -> None:
    """A view that parses another model than the one it documents would make the document lie."""
    seen = 0
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        for op in operations_of(view).values():
            source = inspect.getsource(inspect.unwrap(view))
            bodies = set(re.findall(r"parse_body\((\w+)", source))
            queries = set(re.findall(r"parse_query\((\w+)", source))
            assert bodies == ({op.body.__name__} if op.body else set()), (rule.rule, bodies)
            assert queries == ({op.query.__name__} if op.query else set()), (rule.rule, queries)
            seen += 1
    assert seen >= 23


def test_a_rule_without_a_declaration_is_caught(app: Any) -> None:
    """The check above really notices a route registered the old way (plain `@bp.get`)."""

    @app.get("/api/v1/undeclared-for-test")
    def undeclared() -> str:
        return "x"

    from api.openapi import build_spec

    missing = set(served(app)) - documented(build_spec(app))
    assert missing == {("GET", "/api/v1/undeclared-for-test")}


def test_docs_serves_swagger_ui_from_the_package(client: Any) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/docs/swagger-ui/swagger-ui-bundle.js" in html and "<script>" not in html  # no inline script (CSP)
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    bundle = client.get("/docs/swagger-ui/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.data) > 500_000 and b"SwaggerUIBundle" in bundle.data
    assert client.get("/docs/static/docs.js").status_code == 200
    assert client.get("/docs/swagger-ui/../../__init__.py").status_code == 404
    assert client.get("/docs/swagger-ui/index.template.html").status_code == 404
