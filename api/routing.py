"""Route declarations that feed `/openapi.json`: one decorator registers the Flask route and describes it.

`operation(bp, "POST", "/<task_id>/cancel", summary=..., body=CancelIn, response=StatusOut, errors=(409,))`
adds the URL rule, wraps the view in the permission check, and attaches an `Operation` to the view. The
OpenAPI generator (`api.openapi`) walks the app's URL map and builds each path from those declarations, so
a rule that is served is documented with the parameters, bodies and responses it was declared with, and
`tests/integration/test_openapi_routes.py` fails when a rule under `/api/v1` was registered without one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Blueprint
from pydantic import BaseModel

from api.security import authenticated, require
from taskexec.core.constants import Permission

F = TypeVar("F", bound=Callable[..., Any])

# What each error status means in this API (the envelope is the same for all of them).
ERROR_TEXT: dict[int, str] = {
    400: "malformed request: bad JSON, wrong types, unknown or invalid query parameters",
    401: "missing, invalid or expired credentials",
    403: "the caller's roles lack the permission this operation needs",
    404: "no such resource (or not visible to the caller)",
    409: "conflict with the resource's current state",
    413: "request body larger than TEL_MAX_BODY_BYTES",
    414: "request line (the URL with its query) longer than the server accepts (4094 bytes); refused before the API",
    422: "well-formed but invalid (schema, config or state rules); details name each field",
    503: "a dependency (database or broker) is unreachable",
}


@dataclass(frozen=True)
class Header:
    """A request header an operation reads (documented as a header parameter)."""

    name: str
    description: str
    max_length: int = 255


@dataclass(frozen=True)
class Operation:
    """Everything the OpenAPI document says about one method of one route."""

    method: str
    summary: str
    permission: Permission | None = None
    auth: bool = True
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    response_schema: dict[str, Any] | None = None  # a literal schema when there is no model (e.g. text)
    content_type: str = "application/json"
    status: int = 200
    also: dict[int, str] = field(default_factory=dict)  # further success statuses, e.g. a replay's 200
    # beyond the ones implied: 400 and 414 always; 401 with auth, 403 with a permission, 404 with a path id,
    # 413/422 with a body
    errors: tuple[int, ...] = ()
    headers: tuple[Header, ...] = ()
    unknown_id_is_404: bool = True  # False where an unknown path id is not an error (apply creates it)
    description: str | None = None

    def error_statuses(self, has_path_id: bool) -> list[int]:
        implied = {400, 414}  # 414: gunicorn refuses any over-long request line (a long query or id does it)
        if self.auth:
            implied.add(401)
        if self.permission is not None:
            implied.add(403)
        if has_path_id and self.unknown_id_is_404:
            implied.add(404)
        if self.body is not None:
            implied |= {413, 422}
        return sorted(implied | set(self.errors))

    def success_statuses(self) -> list[int]:
        return sorted({self.status, *self.also})


def operation(bp: Blueprint, method: str, rule: str, *, summary: str, permission: Permission | None = None,
              auth: bool = True, **spec: Any) -> Callable[[F], F]:
    """Register `rule` on `bp` for `method` and describe it for the OpenAPI document.

    With `permission`, the caller must hold it (401/403 otherwise); with only `auth`, any valid credential
    will do; `auth=False` is a public operation (health, metrics).
    """

    def decorate(view: F) -> F:
        op = Operation(method=method.upper(), summary=summary, permission=permission, auth=auth, **spec)
        if permission is not None:
            wrapped: Any = require(permission)(view)
        elif auth:
            wrapped = authenticated(view)
        else:
            wrapped = view
        bp.add_url_rule(rule, endpoint=view.__name__, view_func=wrapped, methods=[op.method])
        wrapped.openapi = {**operations_of(wrapped), op.method: op}
        return wrapped

    return decorate


def operations_of(view: Any) -> dict[str, Operation]:
    """The declared operations of a view function, by upper-case method (empty if it has none)."""
    return dict(getattr(view, "openapi", {}) or {})
