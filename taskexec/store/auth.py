"""Credentials: JWTs (HS256, or RS256 with a public key) and hashed API keys, resolved to a Principal."""

from __future__ import annotations

import hashlib
import secrets
import time
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from taskexec.core.config import Settings
from taskexec.core.constants import ROLE_PERMISSIONS, Permission
from taskexec.core.exceptions import Forbidden, NotFound, Unauthorized
from taskexec.store.models import ApiKey, utcnow

API_KEY_PREFIX = "tel_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a human or service, with roles and the permissions they grant."""

    sub: str
    roles: tuple[str, ...] = ()
    extra_permissions: tuple[str, ...] = ()
    kind: str = "jwt"  # jwt | api_key
    permissions: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        perms: set[str] = set(self.extra_permissions)
        for role in self.roles:
            perms |= {p.value for p in ROLE_PERMISSIONS.get(role, frozenset())}
        object.__setattr__(self, "permissions", frozenset(perms))

    @property
    def is_admin(self) -> bool:
        return Permission.ADMIN.value in self.permissions

    def has(self, permission: Permission) -> bool:
        return self.is_admin or permission.value in self.permissions

    def require(self, permission: Permission) -> None:
        if not self.has(permission):
            raise Forbidden(f"missing permission {permission.value}", details={"permission": permission.value})


def issue_token(
    settings: Settings, sub: str, roles: list[str], ttl: int = 3600, permissions: list[str] | None = None
) -> str:
    """A HS256 JWT signed with TEL_JWT_SECRET (what `taskexec token` prints)."""
    now = int(time.time())
    claims = {"sub": sub, "roles": roles, "iss": settings.jwt_issuer, "iat": now, "exp": now + ttl}
    if permissions:
        claims["permissions"] = permissions
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def decode_token(settings: Settings, token: str) -> Principal:
    try:
        if settings.jwt_public_key:
            claims = jwt.decode(
                token, settings.jwt_public_key, algorithms=["RS256"], issuer=settings.jwt_issuer,
                options={"require": ["exp", "sub", "iss"]},
            )
        else:
            claims = _decode_hs256(settings, token)
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None
    roles = claims.get("roles") or []
    perms = claims.get("permissions") or []
    if not isinstance(roles, list) or not isinstance(perms, list):
        raise Unauthorized("invalid token: roles and permissions must be lists")
    return Principal(sub=str(claims["sub"]), roles=tuple(map(str, roles)), extra_permissions=tuple(map(str, perms)))


def _decode_hs256(settings: Settings, token: str) -> dict[str, Any]:
    """Verify with TEL_JWT_SECRET; during a rotation also with TEL_JWT_SECRET_PREVIOUS until its expiry, so
    tokens issued before the switch keep working while the auth service and the routers change over."""
    try:
        return jwt.decode(token, settings.jwt_secret.get_secret_value(), algorithms=["HS256"],
                          issuer=settings.jwt_issuer, options={"require": ["exp", "sub", "iss"]})
    except jwt.InvalidSignatureError:
        if not previous_secret_valid(settings):
            raise
        assert settings.jwt_secret_previous is not None
        return jwt.decode(token, settings.jwt_secret_previous.get_secret_value(), algorithms=["HS256"],
                          issuer=settings.jwt_issuer, options={"require": ["exp", "sub", "iss"]})


def previous_secret_valid(settings: Settings, now: datetime | None = None) -> bool:
    """True while the previous JWT secret is still accepted (a naive expiry is read as UTC)."""
    until = settings.jwt_secret_previous_until
    if settings.jwt_secret_previous is None or until is None:
        return False
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    return (now or datetime.now(UTC)) < until


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(session: Session, name: str, roles: list[str]) -> tuple[ApiKey, str]:
    """Store a new key (hashed) and return it with its clear text, which is shown once."""
    unknown = [r for r in roles if r not in ROLE_PERMISSIONS]
    if unknown:
        raise ValueError(f"unknown roles: {', '.join(unknown)}")
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, prefix=key[:12], key_hash=hash_key(key), roles=roles)
    session.add(row)
    session.flush()
    return row, key


def revoke_api_key(session: Session, key_id: str) -> None:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"api key {key_id} not found")
    row.revoked_at = utcnow()
    for cache in list(_CACHES):  # this process stops accepting it at once; others when their watch hears of it
        cache.clear()


class ApiKeyCache:
    """Verified API keys (by hash) for TEL_API_KEY_CACHE_SECONDS, used only while its `taskexec.store.keywatch`
    listens: any change to `api_keys` (a revocation anywhere) empties it in every router process at once. One per
    watch (one per app): a watch only vouches for the database it listens to."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Principal, float]] = {}
        _CACHES.add(self)

    def get(self, key_hash: str) -> Principal | None:
        hit = self._entries.get(key_hash)
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def put(self, key_hash: str, principal: Principal, ttl: float) -> None:
        if len(self._entries) >= self.MAX_ENTRIES:
            self.clear()
        self._entries[key_hash] = (principal, time.monotonic() + ttl)

    def clear(self) -> None:
        self._entries = {}


_CACHES: weakref.WeakSet[ApiKeyCache] = weakref.WeakSet()
# Built once: building and cache-keying a statement costs more CPU than running this one.
_KEY_LOOKUP = select(ApiKey.name, ApiKey.roles, ApiKey.revoked_at).where(ApiKey.key_hash == bindparam("key_hash"))


def verify_api_key(session: Session | Connection, key: str) -> Principal:
    """One indexed SELECT of three columns; a revoked key is refused as soon as the revocation commits."""
    row = session.execute(_KEY_LOOKUP, {"key_hash": hash_key(key)}).first()
    if row is None or row.revoked_at is not None:
        raise Unauthorized("invalid or revoked API key")
    return Principal(sub=f"apikey:{row.name}", roles=tuple(row.roles), kind="api_key")
