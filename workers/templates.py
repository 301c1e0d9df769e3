"""`${input.x}` / `${secrets.ref}` templates (the syntax lives in `taskexec.core.integration_spec`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from taskexec.core.integration_spec import ANY_PLACEHOLDER, PLACEHOLDER


class TemplateError(ValueError):
    """A placeholder that cannot be filled; `reason` is MISSING_INPUT or BAD_PLACEHOLDER, `field` names it."""

    def __init__(self, message: str, reason: str, field: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


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


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def render(value: Any, inputs: Any, secret: Callable[[str], str]) -> Any:
    """Fill placeholders in strings (recursively, keys too); a whole-string `${input.x}` keeps x's JSON type."""
    if isinstance(value, dict):
        return {render(k, inputs, secret): render(v, inputs, secret) for k, v in value.items()}
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
            raise TemplateError(f"template names missing input field 'input.{path}'", "MISSING_INPUT",
                                f"input.{path}") from None

    for m in ANY_PLACEHOLDER.finditer(value):
        if not PLACEHOLDER.fullmatch(m.group(0)):
            raise TemplateError(f"unknown placeholder {m.group(0)!r}", "BAD_PLACEHOLDER", m.group(0))
    whole = PLACEHOLDER.fullmatch(value.strip())
    if whole:
        return resolve(whole.group(1), whole.group(2))
    return PLACEHOLDER.sub(lambda m: _as_text(resolve(m.group(1), m.group(2))), value)
