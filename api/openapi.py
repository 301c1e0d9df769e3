"""/openapi.json built from the same pydantic models that validate requests, and /docs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.dashboard import OverviewQuery
from taskexec import __version__, schemas
from taskexec.constants import Status


class EventPage(schemas.ApiModel):
    items: list[schemas.EventOut]


class ClaimOut(schemas.ApiModel):
    id: str
    status: Status
    assignee: str | None
    claimed_at: datetime | None


class CompleteOut(schemas.ApiModel):
    id: str
    status: Status
    completed_by: str | None


class ReassignOut(schemas.ApiModel):
    id: str
    status: Status
    assignee: str | None


class InboxDetail(schemas.InboxItem):
    description: str | None
    can_claim: bool
    form_schema: dict[str, Any]
    output_schema: dict[str, Any]


# (method, path, summary, request model, response model, success status, permission)
ROUTES: list[tuple[str, str, str, type[BaseModel] | None, type[BaseModel] | None, int]] = [
    ("post", "/api/v1/tasks/definitions", "Register a definition or a new version", schemas.DefinitionIn,
     schemas.DefinitionOut, 201),
    ("get", "/api/v1/tasks/definitions", "List definitions (latest versions)", None, schemas.DefinitionPage, 200),
    ("get", "/api/v1/tasks/definitions/{id}", "Get a definition (?version=)", None, schemas.DefinitionOut, 200),
    ("post", "/api/v1/tasks", "Submit a task (Idempotency-Key header)", schemas.SubmitIn, schemas.SubmitOut, 201),
    ("post", "/api/v1/tasks/batch", "Submit up to 1,000 tasks, each with its own optional idempotencyKey: one result "
     "per item, in order (httpStatus 201 stored, 200 a replay, or the item's error); the valid items are stored even "
     "when others are not", schemas.BatchIn, schemas.BatchOut, 200),
    ("get", "/api/v1/tasks", "List tasks", None, schemas.TaskPage, 200),
    ("get", "/api/v1/tasks/{id}", "Task detail", None, schemas.TaskOut, 200),
    ("get", "/api/v1/tasks/{id}/logs", "Captured stdout/stderr", None, schemas.LogsOut, 200),
    ("get", "/api/v1/tasks/{id}/events", "Task history", None, EventPage, 200),
    ("post", "/api/v1/tasks/{id}/cancel", "Cancel a task", schemas.CancelIn, schemas.StatusOut, 200),
    ("post", "/api/v1/tasks/{id}/retry", "Run a FAILED or TIMED_OUT task again", None, schemas.StatusOut, 200),
    ("post", "/api/v1/tasks/{id}/claim", "Claim a manual task offered to you or your role", None, ClaimOut, 200),
    ("post", "/api/v1/tasks/{id}/complete", "Complete a manual task with its output", schemas.CompleteIn,
     CompleteOut, 200),
    ("post", "/api/v1/tasks/{id}/reassign", "Reassign a manual task", schemas.ReassignIn, ReassignOut, 200),
    ("get", "/api/v1/inbox", "Your open manual tasks, by priority then due date", None, schemas.InboxPage, 200),
    ("get", "/api/v1/inbox/{id}", "One inbox task with its form", None, InboxDetail, 200),
    ("get", "/api/v1/deadletters", "Tasks whose retries are spent", None, schemas.DeadLetterPage, 200),
    ("post", "/api/v1/deadletters/{id}/redrive", "Re-drive a dead letter (admin)", None, schemas.RedriveOut, 200),
    ("get", "/api/v1/stats/overview", "Dashboard data: counts, timeline, pools, failures (tasks:monitor)", None, None,
     200),
]

_QUERY: dict[str, type[BaseModel]] = {
    "/api/v1/tasks": schemas.TaskListQuery,
    "/api/v1/tasks/definitions": schemas.DefinitionListQuery,
    "/api/v1/inbox": schemas.PageQuery,
    "/api/v1/deadletters": schemas.DeadLetterQuery,
    "/api/v1/stats/overview": OverviewQuery,
}


def build_spec() -> dict[str, Any]:
    models = {m for r in ROUTES for m in (r[3], r[4]) if m} | {schemas.ErrorEnvelope}
    _, defs = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        by_alias=True,
        ref_template="#/components/schemas/{model}",
    )
    components = defs.get("$defs", {})
    error = {"description": "error", "content": _json_ref("ErrorEnvelope")}
    paths: dict[str, Any] = {}
    for method, path, summary, req, resp, status in ROUTES:
        op: dict[str, Any] = {"summary": summary, "responses": {"4XX": error},
                              "security": [{"bearer": []}, {"apiKey": []}]}
        if req:
            op["requestBody"] = {"required": True, "content": _json_ref(req.__name__)}
        op["responses"][str(status)] = {"description": "success"} | (
            {"content": _json_ref(resp.__name__)} if resp else {}
        )
        params = ([{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
                  if "{id}" in path else [])
        if method == "get" and path in _QUERY:
            params += _query_parameters(_QUERY[path])
        if (method, path) == ("post", "/api/v1/tasks"):  # a replay with the same Idempotency-Key is a 200
            params.append({"name": "Idempotency-Key", "in": "header", "required": False,
                           "schema": {"type": "string", "minLength": 1, "maxLength": 255}})
            op["responses"]["200"] = op["responses"]["201"]
        if params:
            op["parameters"] = params
        paths.setdefault(path, {})[method] = op
    paths.update(_ops_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "taskexec Task Execution Layer", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


DOCS_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>taskexec API</title>
<style>body{font:15px system-ui,sans-serif;max-width:960px;margin:2rem auto;color:#222}
code{background:#f3f3f3;padding:2px 4px}li{margin:.3rem 0}.m{display:inline-block;width:4rem;font-weight:700}</style>
</head><body><h1>taskexec API</h1><p>Machine-readable spec: <a href="/openapi.json">/openapi.json</a>.</p>
<ul id="ops"></ul><script>
fetch('/openapi.json').then(r=>r.json()).then(s=>{const ul=document.getElementById('ops');
for(const [p,ops] of Object.entries(s.paths)) for(const [m,o] of Object.entries(ops)){
const li=document.createElement('li');
li.innerHTML='<span class="m">'+m.toUpperCase()+'</span><code>'+p+'</code> '+(o.summary||'');ul.appendChild(li);}});
</script></body></html>"""


def register_openapi(app: Flask) -> None:
    spec = build_spec()

    @app.get("/openapi.json")
    def openapi():
        return spec

    @app.get("/docs")
    def docs():
        return DOCS_HTML


def _json_ref(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One query parameter per field of `model`, typed as the model validates it (enums and bounds included)."""
    schema = model.model_json_schema(by_alias=True)
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    return [{"name": name, "in": "query", "required": name in required, "schema": _query_schema(prop, defs)}
            for name, prop in schema.get("properties", {}).items()]


def _query_schema(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A field's schema with `$ref`s inlined and the `null` branch of an optional field dropped (absent = null)."""
    if "$ref" in prop:
        return _query_schema({**defs[prop["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in prop.items()
                                                                           if k != "$ref"}}, defs)
    branches = [b for b in prop.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
        return {**_query_schema(branches[0], defs), **rest}
    return {k: v for k, v in prop.items() if k != "default"}


_STATUS: dict[str, Any] = {"type": "object", "required": ["status"], "properties": {"status": {"enum": ["UP", "DOWN"]}}}
_READY = {**_STATUS, "required": ["status", "checks"],
          "properties": {**_STATUS["properties"], "checks": {"type": "object", "additionalProperties": {
              "enum": ["UP", "DOWN"]}}, "error": {"$ref": "#/components/schemas/ErrorBody"}}}


def _ops_paths() -> dict[str, Any]:
    """Liveness, readiness (503 while a dependency is down) and Prometheus metrics: no credentials."""
    def op(summary: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {"get": {"summary": summary, "security": [], "responses": responses}}

    def body(schema: dict[str, Any]) -> dict[str, Any]:
        return {"application/json": {"schema": schema}}

    ready = op("readiness: database and broker reachable", {
        "200": {"description": "ready", "content": body(_READY)},
        "503": {"description": "a dependency is unreachable", "content": body(_READY)}})
    return {
        "/health": op("liveness", {"200": {"description": "alive", "content": body(_STATUS)}}),
        "/ready": ready,
        "/health/readiness": ready,
        "/metrics": op("Prometheus metrics", {"200": {"description": "text exposition format",
                                                      "content": {"text/plain": {"schema": {"type": "string"}}}}}),
    }
