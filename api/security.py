"""Authentication of every request and the permission decorator used by each endpoint."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request

from api.runtime import runtime
from taskexec.core.constants import Permission
from taskexec.core.exceptions import TaskexecError, Unauthorized
from taskexec.store.auth import Principal, decode_token, hash_key, verify_api_key

F = TypeVar("F", bound=Callable[..., Any])


def authenticate() -> Principal:
    """Resolve the caller from `Authorization: Bearer` or `X-API-Key`; 401 if neither is valid.

    Once per request: the rate-limit hook resolves the caller before the route does, and both get the
    same answer (the principal, or the same 401)."""
    cached = g.get("auth_result")
    if isinstance(cached, Principal):
        return cached
    if isinstance(cached, Unauthorized):
        raise cached
    try:
        principal = _authenticate()
    except Unauthorized as exc:
        g.auth_result = exc
        raise
    g.auth_result = principal
    return principal


def try_authenticate() -> Principal | None:
    """The caller, or None when the request carries no valid credentials (the route answers 401 itself)."""
    try:
        return authenticate()
    except TaskexecError:  # 401, or the API key store unreachable: the route reports it
        return None


def _authenticate() -> Principal:
    rt = runtime()
    header = request.headers.get("Authorization", "")
    api_key = request.headers.get("X-API-Key")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization header must be 'Bearer <token>'")
        return decode_token(rt.settings, token.strip())
    if api_key:
        return _api_key_principal(api_key.strip())
    raise Unauthorized("missing credentials: send 'Authorization: Bearer <JWT>' or 'X-API-Key'")


def _api_key_principal(key: str) -> Principal:
    """Looked up in the database, or remembered for TEL_API_KEY_CACHE_SECONDS while this process hears of every
    change to the keys (`taskexec.store.keywatch`)."""
    rt = runtime()
    watch = rt.keywatch
    ttl = rt.settings.api_key_cache_s if watch is not None and watch.listening.is_set() else 0
    digest = hash_key(key) if ttl > 0 else ""
    if watch is not None and ttl > 0 and (cached := watch.cache.get(digest)) is not None:
        return cached
    with rt.db.autocommit() as conn:  # one round trip: no session, no BEGIN/COMMIT
        principal = verify_api_key(conn, key)
    if watch is not None and ttl > 0:
        watch.cache.put(digest, principal, ttl)
    return principal


def current() -> Principal:
    return g.principal


def require(permission: Permission) -> Callable[[F], F]:
    """Authenticate, then demand `permission` (403 when the caller lacks it)."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = authenticate()
            g.principal = principal
            principal.require(permission)
            return view(*args, **kwargs)

        wrapper.permission = permission  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def authenticated(view: F) -> F:
    """Authenticate only: any valid credential may call the view (e.g. `GET /api/v1/me`)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        g.principal = authenticate()
        return view(*args, **kwargs)

    wrapper.auth_only = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def audit_fields() -> dict[str, str | None]:
    """Who-and-where of the current request, for the audit trail."""
    return {
        "ip": request.headers.get("X-Forwarded-For", request.remote_addr or "").split(",")[0].strip() or None,
        # not `request.user_agent` truthiness: werkzeug's UserAgent is falsy for non-browser agents
        "user_agent": (request.headers.get("User-Agent") or "")[:512] or None,
    }
