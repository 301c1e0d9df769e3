"""`${input.x}` / `${secrets.ref}` templates and the small response-mapping language."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_PLACEHOLDER = re.compile(r"\$\{\s*(input|secrets)\.([A-Za-z0-9_.\-/\[\]]+)\s*\}")


class TemplateError(ValueError):
    pass


def lookup(data: Any, path: str) -> Any:
    """Dotted path with `[n]` indexes; raises KeyError when a part is missing."""
    cur = data
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            idx = int(part[1:-1])
            if not isinstance(cur, list) or idx >= len(cur):
                raise KeyError(path)
            cur = cur[idx]
        else:
            if not isinstance(cur, dict) or part not in cur:
                raise KeyError(path)
            cur = cur[part]
    return cur


def render(value: Any, inputs: Any, secret: Callable[[str], str]) -> Any:
    """Fill placeholders in strings (recursively); a whole-string `${input.x}` keeps x's JSON type."""
    if isinstance(value, dict):
        return {k: render(v, inputs, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, inputs, secret) for v in value]
    if not isinstance(value, str):
        return value

    def resolve(kind: str, path: str) -> Any:
        if kind == "secrets":
            return secret(path)
        try:
            return lookup(inputs, path)
        except KeyError:
            raise TemplateError(f"template names missing input field 'input.{path}'") from None

    whole = _PLACEHOLDER.fullmatch(value.strip())
    if whole:
        return resolve(whole.group(1), whole.group(2))
    return _PLACEHOLDER.sub(lambda m: str(resolve(m.group(1), m.group(2))), value)


def map_response(mapping: dict[str, Any] | None, body: Any) -> Any:
    """`{"out": "$.data.id"}` -> `{"out": body.data.id}`; no mapping returns the body as is."""
    if not mapping:
        return body
    out = {}
    for key, expr in mapping.items():
        if isinstance(expr, str) and expr.startswith("$"):
            path = expr[1:].lstrip(".")
            try:
                out[key] = lookup(body, path) if path else body
            except KeyError:
                raise TemplateError(f"responseMapping {key!r}: path {expr!r} not in response") from None
        else:
            out[key] = expr
    return out
