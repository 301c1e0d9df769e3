"""JWT issue and decode: anything but a valid, unexpired, correctly signed token from our issuer is 401."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from taskexec.core.config import Settings
from taskexec.core.constants import Permission
from taskexec.core.exceptions import Unauthorized
from taskexec.store.auth import decode_token, issue_token

SECRET = "unit-secret-0123456789abcdef-0123456789"


@pytest.fixture
def settings() -> Settings:
    return Settings(TEL_JWT_SECRET=SECRET)  # type: ignore[call-arg]


def raw(claims: dict[str, Any], secret: str = SECRET, alg: str = "HS256") -> str:
    base = {"sub": "alice", "roles": ["submitter"], "iss": "auth-service", "exp": int(time.time()) + 60}
    return jwt.encode({k: v for k, v in {**base, **claims}.items() if v is not None}, secret, algorithm=alg)


def test_round_trip(settings: Settings) -> None:
    token = issue_token(settings, "alice", ["developer"], permissions=["tasks:reassign"])
    p = decode_token(settings, token)
    assert (p.sub, p.roles, p.extra_permissions) == ("alice", ("developer",), ("tasks:reassign",))
    assert p.has(Permission.REASSIGN)  # the extra permission counts
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer="auth-service")
    assert claims["exp"] - claims["iat"] == 3600


def test_issuer_comes_from_settings() -> None:
    s = Settings(TEL_JWT_SECRET=SECRET, TEL_JWT_ISSUER="other")  # type: ignore[call-arg]
    assert decode_token(s, issue_token(s, "bob", [])).sub == "bob"
    with pytest.raises(Unauthorized):
        decode_token(Settings(TEL_JWT_SECRET=SECRET), issue_token(s, "bob", []))  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("claims", "secret", "words"),
    [
        ({"iss": "someone-else"}, SECRET, "issuer"),
        ({"exp": int(time.time()) - 120}, SECRET, "expired"),
        ({}, "another-secret-0123456789abcdef-01234", "signature"),
        ({"roles": "admin"}, SECRET, "list"),
        ({"permissions": "admin"}, SECRET, "list"),
        ({"exp": None}, SECRET, "exp"),
        ({"iss": None}, SECRET, "iss"),
        ({"sub": None}, SECRET, "sub"),
    ],
    ids=[
        "wrong-issuer",
        "expired",
        "bad-signature",
        "roles-string",
        "permissions-string",
        "no-exp",
        "no-iss",
        "no-sub",
    ],
)
def test_rejected(settings: Settings, claims: dict[str, Any], secret: str, words: str) -> None:
    with pytest.raises(Unauthorized) as exc:
        decode_token(settings, raw(claims, secret))
    assert exc.value.status == 401
    assert words in exc.value.message.lower()


def test_garbage_and_alg_none_rejected(settings: Settings) -> None:
    for token in (
        "not-a-jwt",
        jwt.encode(
            {"sub": "a", "roles": ["admin"], "iss": "auth-service", "exp": int(time.time()) + 60},
            None,
            algorithm="none",
        ),
    ):
        with pytest.raises(Unauthorized):
            decode_token(settings, token)
