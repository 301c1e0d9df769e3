"""Definition-time checks of an INTEGRATION executionConfig (422 for what can be known before a run).

Also the shared grammar bits: the `${input.x}` / `${secrets.ref}` placeholder syntax and the
rate-limit spec (`100/min`, `10/5s`) used by settings and definitions.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from taskexec.core.exceptions import ValidationFailed
from taskexec.core.mapping import MappingError, expressions

PLACEHOLDER = re.compile(r"\$\{\s*(input|secrets)\.([A-Za-z0-9_.\-/#\[\]]+)\s*\}")
ANY_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
SECRET_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*(#[A-Za-z0-9_.\-]+)?$")
AUTH_TYPES = ("none", "api_key", "bearer", "basic", "oauth2_client_credentials")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(?:(\d+(?:\.\d+)?)\s*s|(min|m|minute|h|hour))\s*$")


def parse_rate(spec: str) -> tuple[int, float]:
    """`100/min` -> (100, 60.0); `10/5s` -> (10, 5.0); `3600/h` -> (3600, 3600.0)."""
    m = _RATE.match(spec)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"invalid rate {spec!r} (use e.g. '100/min' or '10/5s')")
    seconds = float(m.group(2)) if m.group(2) else (60.0 if m.group(3) in ("min", "m", "minute") else 3600.0)
    if seconds <= 0:
        raise ValueError(f"invalid rate {spec!r}: the window must be positive")
    return int(m.group(1)), seconds


def parse_rate_overrides(text: str) -> dict[str, tuple[int, float]]:
    """`host[:port]=spec,host2=spec2` -> {host: (count, seconds)} (hosts lower-cased)."""
    out: dict[str, tuple[int, float]] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        host, sep, spec = item.partition("=")
        if not sep or not host.strip():
            raise ValueError(f"invalid override {item!r} (use host[:port]=100/min)")
        out[host.strip().lower()] = parse_rate(spec)
    return out


def placeholders(value: Any) -> list[tuple[str, str]]:
    """Every (kind, path) placeholder in a JSON value; raises ValueError for an unknown `${...}`."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in placeholders(k) + placeholders(v)]
    if isinstance(value, list):
        return [p for v in value for p in placeholders(v)]
    if not isinstance(value, str):
        return []
    found = []
    for m in ANY_PLACEHOLDER.finditer(value):
        strict = PLACEHOLDER.fullmatch(m.group(0))
        if not strict:
            raise ValueError(f"unknown placeholder {m.group(0)!r} (use ${{input.<field>}} or ${{secrets.<ref>}})")
        found.append((strict.group(1), strict.group(2)))
    return found


def check_integration(config: dict[str, Any], field: str = "executionConfig") -> None:
    """Raise ValidationFailed (422) listing every problem found in an INTEGRATION config."""
    problems: list[tuple[str, str]] = []
    request = config.get("request")
    if bool(config.get("integrationId")) == bool(request):
        problems.append(("", "give either integrationId (Integration Service) or request (direct HTTP call)"))
    if config.get("integrationId") and not re.match(r"^[A-Za-z0-9._-]{1,128}$", str(config["integrationId"])):
        problems.append(("integrationId", "must be 1-128 letters, digits, '.', '_' or '-'"))
    if isinstance(request, dict):
        problems += _check_request(request)
    elif request is not None:
        problems.append(("request", "must be an object"))
    problems += _check_auth(config.get("auth"))
    for key in ("timeoutMs", "connectTimeoutMs"):
        value = config.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            problems.append((key, "must be a positive integer (milliseconds)"))
    rate = config.get("rateLimit")
    if rate is not None:
        rpm = rate.get("requestsPerMinute") if isinstance(rate, dict) else None
        if not isinstance(rpm, int) or isinstance(rpm, bool) or rpm < 1:
            problems.append(("rateLimit.requestsPerMinute", "must be a positive integer"))
    try:
        expressions(config.get("responseMapping"))
    except MappingError as exc:
        problems.append(("responseMapping", str(exc)))
    for name in ("params", "request", "auth"):
        try:
            placeholders(config.get(name))
        except ValueError as exc:
            problems.append((name, str(exc)))
    if problems:
        raise ValidationFailed(
            "invalid INTEGRATION executionConfig",
            details=[{"field": f"{field}.{path}".rstrip("."), "message": msg} for path, msg in problems],
        )


def _check_request(req: dict[str, Any]) -> list[tuple[str, str]]:
    problems = []
    method = req.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in METHODS:
        problems.append(("request.method", f"must be one of {', '.join(METHODS)}"))
    url = req.get("url")
    if not isinstance(url, str) or not url.strip():
        problems.append(("request.url", "required"))
    elif not url.lstrip().startswith("${"):  # a templated scheme is checked at run time
        parts = urlsplit(url.strip())
        if parts.scheme.lower() not in ("http", "https"):
            problems.append(("request.url", f"scheme must be http or https, got {parts.scheme or 'none'!r}"))
        elif not parts.netloc:
            problems.append(("request.url", "must name a host"))
    for key in ("headers", "query"):
        if req.get(key) is not None and not isinstance(req[key], dict):
            problems.append((f"request.{key}", "must be an object"))
    return problems


def _check_auth(auth: Any) -> list[tuple[str, str]]:
    if auth is None:
        return []
    if not isinstance(auth, dict):
        return [("auth", "must be an object")]
    kind = auth.get("type", "none")
    if kind not in AUTH_TYPES:
        return [("auth.type", f"must be one of {', '.join(AUTH_TYPES)}")]
    problems = []
    if kind != "none":
        ref = auth.get("secretRef")
        if not isinstance(ref, str) or not SECRET_REF.match(ref):
            problems.append(("auth.secretRef", "required: the name of the secret (e.g. 'billing-token')"))
    if kind == "api_key" and auth.get("in", "header") not in ("header", "query"):
        problems.append(("auth.in", "must be 'header' or 'query'"))
    if kind == "basic" and not isinstance(auth.get("username"), str):
        problems.append(("auth.username", "required for basic auth"))
    if kind == "oauth2_client_credentials":
        token_url = auth.get("tokenUrl")
        if not isinstance(token_url, str) or urlsplit(token_url).scheme not in ("http", "https"):
            problems.append(("auth.tokenUrl", "required: an http(s) URL"))
        if not isinstance(auth.get("clientId"), str) or not auth["clientId"]:
            problems.append(("auth.clientId", "required"))
    return problems
