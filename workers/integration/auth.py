"""Outbound authentication: none, API key (header or query), bearer, basic, OAuth2 client credentials.

OAuth2 tokens are fetched from `tokenUrl` (client_secret_basic), cached in the worker process until
30 s before `expires_in`, and fetched again once when the target answers 401.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from taskexec.core.constants import TaskErrorCode
from workers.integration.failure import CallFailure
from workers.integration.http import Request, SessionPool
from workers.integration.redact import Redactor

E = TaskErrorCode
EXPIRY_MARGIN_S = 30.0
DEFAULT_TOKEN_TTL_S = 300.0


@dataclass
class _Token:
    value: str
    expires_at: float


class TokenCache:
    """Client-credentials tokens per (tokenUrl, clientId, scope, secret), shared by the process's threads."""

    def __init__(self) -> None:
        self._tokens: dict[str, _Token] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(cfg: dict[str, Any], secret: str) -> str:
        raw = "\0".join([cfg["tokenUrl"], cfg["clientId"], str(cfg.get("scope") or ""), secret])
        return hashlib.sha256(raw.encode()).hexdigest()

    def token(self, cfg: dict[str, Any], secret: str, pool: SessionPool, timeout: tuple[float, float],
              redactor: Redactor, force: bool = False) -> str:
        key = self._key(cfg, secret)
        with self._lock:
            cached = self._tokens.get(key)
            if cached and not force and cached.expires_at > time.time():
                redactor.add(cached.value)
                return cached.value
        token = self._fetch(cfg, secret, pool, timeout, redactor)
        with self._lock:
            self._tokens[key] = token
        return token.value

    def _fetch(self, cfg: dict[str, Any], secret: str, pool: SessionPool, timeout: tuple[float, float],
               redactor: Redactor) -> _Token:
        shown = redactor.url(cfg["tokenUrl"])
        form = {"grant_type": "client_credentials"}
        if cfg.get("scope"):
            form["scope"] = str(cfg["scope"])
        if cfg.get("audience"):
            form["audience"] = str(cfg["audience"])
        req = Request("POST", cfg["tokenUrl"], headers={"Accept": "application/json"}, data=form,
                      auth=(cfg["clientId"], secret))
        try:
            reply = pool.send(req, timeout, 1024 * 1024, shown)
        except CallFailure as exc:
            exc.message = f"OAuth2 token endpoint: {exc.message}"
            raise
        if reply.status in (400, 401, 403):
            raise CallFailure(E.AUTHENTICATION_ERROR, f"OAuth2 token endpoint {shown} refused the client credentials "
                              f"({reply.status})", details={"httpStatus": reply.status})
        if reply.status >= 300:
            retry = reply.status in (408, 429) or reply.status >= 500
            raise CallFailure(E.SERVICE_UNAVAILABLE if retry else E.AUTHENTICATION_ERROR,
                              f"OAuth2 token endpoint {shown} answered {reply.status}", retryable=retry,
                              details={"httpStatus": reply.status})
        try:
            body = _json(reply.content)
            value = str(body["access_token"])
        except (ValueError, KeyError, TypeError):
            raise CallFailure(E.AUTHENTICATION_ERROR, f"OAuth2 token endpoint {shown} returned no access_token"
                              ) from None
        redactor.add(value)
        ttl = float(body.get("expires_in") or DEFAULT_TOKEN_TTL_S)
        return _Token(value, time.time() + max(0.0, ttl - EXPIRY_MARGIN_S))


def _json(content: bytes) -> dict[str, Any]:
    import json

    body = json.loads(content)
    if not isinstance(body, dict):
        raise ValueError("not an object")
    return body


_tokens = TokenCache()


class Authenticator:
    """Applies a definition's `auth` to a request; `refresh()` says whether a 401 is worth one more try."""

    def __init__(self, cfg: dict[str, Any] | None, secret: Callable[[str], str], redactor: Redactor,
                 pool: SessionPool, timeout: tuple[float, float], tokens: TokenCache | None = None) -> None:
        self.cfg = cfg or {}
        self.kind = self.cfg.get("type", "none")
        self.secret = secret
        self.redactor = redactor
        self.pool = pool
        self.timeout = timeout
        self.tokens = tokens or _tokens
        self._refreshed = False

    def apply(self, req: Request, force: bool = False) -> None:
        cfg, kind = self.cfg, self.kind
        if kind == "none":
            return
        value = self.secret(cfg["secretRef"])
        if kind == "bearer":
            req.headers["Authorization"] = f"Bearer {value}"
        elif kind == "api_key":
            name = cfg.get("name") or cfg.get("header") or "X-API-Key"
            if cfg.get("in", "header") == "query":
                req.params[name] = value
            else:
                req.headers[name] = value
        elif kind == "basic":
            self.redactor.add_basic(str(cfg["username"]), value)
            req.auth = (str(cfg["username"]), value)
        elif kind == "oauth2_client_credentials":
            token = self.tokens.token(cfg, value, self.pool, self.timeout, self.redactor, force=force)
            req.headers["Authorization"] = f"Bearer {token}"
        else:
            raise CallFailure.bad_input("BAD_AUTH", f"unknown auth type {kind!r}")

    def refresh(self, req: Request) -> bool:
        """After a 401: fetch a new OAuth2 token once and re-apply it; False when there is nothing to refresh."""
        if self.kind != "oauth2_client_credentials" or self._refreshed:
            return False
        self._refreshed = True
        self.apply(req, force=True)
        return True
