"""`/openapi.json` generated from the app's routes and their pydantic models, and `/docs` (Swagger UI).

Every documented route was registered through `api.routing.operation`, which attaches an `Operation`
(summary, permission, body/query/response models, statuses, headers) to its view. `build_spec(app)` walks
`app.url_map`: paths and methods come from the Flask rules, parameters from the rule's variables, the query
model and the declared headers, schemas from the models (the same ones `parse_body`/`parse_query` validate
with). Nothing is listed by hand here.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from werkzeug.routing import Rule

from api.routing import ERROR_TEXT, Operation, operations_of
from taskexec import __version__
from taskexec.contract import schemas
from taskexec.core.constants import API_PREFIX

_PATH_VAR = re.compile(r"<(?:[^:>]+:)?([^>]+)>")
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
SUCCESS_TEXT = {200: "OK", 201: "created"}
# On every /api/v1 answer (api/ratelimit.py); absent only while the rate-limit store is unreachable.
RATE_HEADERS: dict[str, Any] = {
    "X-RateLimit-Limit": {"description": "requests allowed per window for this principal and route class",
                          "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "requests left in the current window", "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"description": "Unix time at which the current window ends", "schema": {"type": "integer"}},
}
RETRY_AFTER = {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}
RATE_LIMITED_TEXT = "RATE_LIMITED: over the caller's rate limit for this class of route (Retry-After)"
SHED_TEXT = "UNAVAILABLE: a dependency is unreachable, or the task's queue is over the shedding threshold for its " \
            "priority (Retry-After)"


def spec_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: the (single) path variable is `{id}`, as in `/api/v1/tasks/{id}`."""
    return _PATH_VAR.sub("{id}", rule)


def documented_rules(app: Flask) -> list[tuple[Rule, dict[str, Operation]]]:
    """Every URL rule whose view carries declared operations, in registration order."""
    out = []
    for rule in app.url_map.iter_rules():
        ops = operations_of(app.view_functions.get(rule.endpoint))
        if ops:
            out.append((rule, ops))
    return out


def build_spec(app: Flask) -> dict[str, Any]:
    rules = documented_rules(app)
    models: set[type[BaseModel]] = {schemas.ErrorEnvelope}
    for _, ops in rules:
        for op in ops.values():
            models |= {m for m in (op.body, op.response) if m is not None}
    _, defs = models_json_schema([(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
                                 by_alias=True, ref_template="#/components/schemas/{model}")
    paths: dict[str, Any] = {}
    for rule, ops in rules:
        view = app.view_functions[rule.endpoint]
        for method in sorted(m for m in (rule.methods or ()) if m in ops):
            paths.setdefault(spec_path(rule.rule), {})[method.lower()] = _operation(rule, ops[method], view)
    return {
        "openapi": "3.1.0",
        "info": {"title": "taskexec Task Execution Layer", "version": __version__,
                 "description": "Submit, watch and act on tasks. Authenticate with `Authorization: Bearer <JWT>` "
                                "or `X-API-Key: <key>`; errors are `{\"error\": {code, message, details}}`."},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "headers": RATE_HEADERS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def _operation(rule: Rule, op: Operation, view: Any) -> dict[str, Any]:
    has_id = bool(rule.arguments)
    operation_id = op.method.lower() + "_" + rule.endpoint.replace(".", "_")  # e.g. get_tasks_list_
    out: dict[str, Any] = {"summary": op.summary, "operationId": operation_id, "tags": [_tag(rule.rule)],
                           "security": SECURITY if op.auth else []}
    if op.description or op.permission:
        needs = f"Needs `{op.permission.value}`." if op.permission else ""
        out["description"] = " ".join(x for x in (op.description, needs) if x)
    params = [{"name": "id", "in": "path", "required": True, "description": _describe(var),
               "schema": {"type": "string", "minLength": 1}} for var in sorted(rule.arguments)]
    params += [{"name": h.name, "in": "header", "required": False, "description": h.description,
                "schema": {"type": "string", "minLength": 1, "maxLength": h.max_length}} for h in op.headers]
    if op.query is not None:
        params += query_parameters(op.query)
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required, "content": _ref(op.body.__name__)}
    limited = rule.rule.startswith(API_PREFIX + "/")  # rate-limited, with X-RateLimit-* on every answer
    headers = {name: {"$ref": f"#/components/headers/{name}"} for name in RATE_HEADERS} if limited else {}
    responses: dict[str, Any] = {}
    for status in op.success_statuses():
        text = op.also.get(status) or SUCCESS_TEXT.get(status, "OK")
        body = (_ref(op.response.__name__, op.content_type) if op.response is not None
                else {op.content_type: {"schema": op.response_schema}} if op.response_schema is not None else None)
        responses[str(status)] = {"description": text, **({"content": body} if body else {}),
                                  **({"headers": headers} if headers else {})}
    errors = set(op.error_statuses(has_id)) | hook_statuses(rule, view)
    texts = {**ERROR_TEXT, 429: RATE_LIMITED_TEXT, **({503: SHED_TEXT} if 503 in hook_statuses(rule, view) else {})}
    for status in sorted(errors):
        error = {"description": texts.get(status, "error"), "content": _ref("ErrorEnvelope")}
        if headers:
            error["headers"] = {**headers, **({"Retry-After": RETRY_AFTER} if status in (429, 503) else {})}
        responses[str(status)] = error
    out["responses"] = responses
    return out


def hook_statuses(rule: Rule, view: Any) -> set[int]:
    """Error statuses the request hooks add to a route: 429 from the rate limit on every /api/v1 route
    (api/ratelimit.py), 503 from load shedding on a route declared `@sheddable` (api/shedding.py)."""
    out = {429} if rule.rule.startswith(API_PREFIX + "/") else set()
    if getattr(view, "shed_extract", None) is not None:
        out.add(503)
    return out


def _tag(rule: str) -> str:
    parts = rule.removeprefix("/api/v1/").split("/")
    if not rule.startswith("/api/v1/"):
        return "operations"
    return "definitions" if parts[:2] == ["tasks", "definitions"] else parts[0]


def _describe(var: str) -> str:
    return var.removesuffix("_id").replace("_", " ") + " id"


def _ref(name: str, content_type: str = "application/json") -> dict[str, Any]:
    return {content_type: {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One query parameter per field of `model`, typed as the model validates it (enums and bounds included)."""
    schema = model.model_json_schema(by_alias=True)
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        param = {"name": name, "in": "query", "required": name in required, "schema": _query_schema(prop, defs)}
        if "description" in prop:
            param["description"] = prop["description"]
        out.append(param)
    return out


def _query_schema(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A field's schema with `$ref`s inlined and the `null` branch of an optional field dropped (absent = null)."""
    if "$ref" in prop:
        return _query_schema({**defs[prop["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in prop.items()
                                                                           if k != "$ref"}}, defs)
    branches = [b for b in prop.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default", "description", "title")}
        return {**_query_schema(branches[0], defs), **rest}
    return {k: v for k, v in prop.items() if k not in ("default", "description")}
