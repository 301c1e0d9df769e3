"""The response-mapping language of integration tasks (see docs/integration-tasks.md).

A mapping is any JSON value. Strings that start with `$` are expressions, everything else is
copied as is; objects and lists are mapped member by member. Expressions:

* `$` the whole JSON body; `$.a.b`, `$.items[0]`, `$.items[-1]`, `$['odd key']`, `$.items[*].id`
  (a wildcard yields a list);
* `$status` the HTTP status code, `$headers.Content-Type` a response header (case-insensitive);
* a trailing `?` makes a path optional (null when missing); `$$...` is the literal string `$...`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"""\.(?P<name>[^.\[\]?]+)|\[(?P<index>-?\d+)\]|\[(?P<star>\*)\]|\.(?P<dotstar>\*)"""
                    r"""|\[(?P<quote>['"])(?P<key>.*?)(?P=quote)\]""")
WILDCARD = object()


class MappingError(ValueError):
    """A mapping expression that cannot be parsed, or does not match the response."""


@dataclass(frozen=True)
class Expr:
    """A parsed expression: where it reads from, the path steps, and whether it may be missing."""

    source: str  # body | status | headers
    steps: tuple[Any, ...]
    optional: bool
    text: str

    @property
    def needs_json(self) -> bool:
        return self.source == "body"


@dataclass(frozen=True)
class Response:
    """What a mapping reads: the decoded JSON body (or None), whether it was JSON, status and headers."""

    body: Any
    is_json: bool
    status: int = 200
    headers: dict[str, str] | None = None


def parse(text: str) -> Expr:
    """Parse one `$...` expression; raises MappingError naming the problem."""
    raw = text
    optional = text.endswith("?")
    if optional:
        text = text[:-1]
    if text == "$status":
        return Expr("status", (), optional, raw)
    if text.startswith("$headers."):
        name = text[len("$headers."):]
        if not name:
            raise MappingError(f"{raw!r}: header name missing")
        return Expr("headers", (name.lower(),), optional, raw)
    if not text.startswith("$"):
        raise MappingError(f"{raw!r}: an expression starts with '$'")
    rest, steps, pos = text[1:], [], 0
    while pos < len(rest):
        m = _TOKEN.match(rest, pos)
        if not m:
            raise MappingError(f"{raw!r}: cannot parse at {rest[pos:]!r}")
        if m.group("name") is not None:
            steps.append(m.group("name"))
        elif m.group("index") is not None:
            steps.append(int(m.group("index")))
        elif m.group("star") or m.group("dotstar"):
            steps.append(WILDCARD)
        else:
            steps.append(m.group("key"))
        pos = m.end()
    return Expr("body", tuple(steps), optional, raw)


def expressions(mapping: Any) -> list[Expr]:
    """Every expression in a mapping (parsing them all, so a bad one raises)."""
    if isinstance(mapping, dict):
        return [e for v in mapping.values() for e in expressions(v)]
    if isinstance(mapping, list):
        return [e for v in mapping for e in expressions(v)]
    if isinstance(mapping, str) and mapping.startswith("$") and not mapping.startswith("$$"):
        return [parse(mapping)]
    return []


def needs_json(mapping: Any) -> bool:
    return any(e.needs_json for e in expressions(mapping))


def _walk(value: Any, steps: tuple[Any, ...], expr: Expr) -> Any:
    for i, step in enumerate(steps):
        if step is WILDCARD:
            items = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else None
            if items is None:
                raise KeyError(expr.text)
            return [_walk(item, steps[i + 1:], expr) for item in items]
        if isinstance(step, int):
            if not isinstance(value, list) or not -len(value) <= step < len(value):
                raise KeyError(expr.text)
            value = value[step]
        else:
            if not isinstance(value, dict) or step not in value:
                raise KeyError(expr.text)
            value = value[step]
    return value


def evaluate(expr: Expr, resp: Response) -> Any:
    if expr.source == "status":
        return resp.status
    if expr.source == "headers":
        headers = {k.lower(): v for k, v in (resp.headers or {}).items()}
        if expr.steps[0] in headers:
            return headers[expr.steps[0]]
        if expr.optional:
            return None
        raise MappingError(f"responseMapping: header {expr.steps[0]!r} not in the response")
    try:
        return _walk(resp.body, expr.steps, expr)
    except KeyError:
        if expr.optional:
            return None
        raise MappingError(f"responseMapping: path {expr.text!r} not found in the response") from None


def apply(mapping: Any, resp: Response) -> Any:
    """Map a response into a task output; without a mapping the body itself is the output."""
    if mapping is None:
        return resp.body
    if needs_json(mapping) and not resp.is_json:
        raise MappingError("response is not JSON but responseMapping reads the body")
    return _apply(mapping, resp)


def _apply(mapping: Any, resp: Response) -> Any:
    if isinstance(mapping, dict):
        return {k: _apply(v, resp) for k, v in mapping.items()}
    if isinstance(mapping, list):
        return [_apply(v, resp) for v in mapping]
    if isinstance(mapping, str) and mapping.startswith("$$"):
        return mapping[1:]
    if isinstance(mapping, str) and mapping.startswith("$"):
        return evaluate(parse(mapping), resp)
    return mapping
