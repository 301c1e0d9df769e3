"""Manual task assignment: who a task is offered to, with `${input.field}` placeholders filled."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from taskexec.core.exceptions import ValidationFailed

_FIELD = re.compile(r"\$\{\s*input\.([A-Za-z0-9_.]+)\s*\}")
DEFAULT_DEADLINE_S = 86400


@dataclass
class Assignment:
    assignee: str | None
    candidate_users: list[str]
    candidate_roles: list[str]


def _fill(value: str, inputs: Any) -> str:
    def sub(m: re.Match[str]) -> str:
        cur = inputs
        for part in m.group(1).split("."):
            if not isinstance(cur, dict) or part not in cur:
                raise ValidationFailed(f"assignment names missing input field input.{m.group(1)}",
                                       details=[{"field": f"input.{m.group(1)}", "message": "required by assignment"}])
            cur = cur[part]
        return str(cur)

    return _FIELD.sub(sub, value)


def resolve(config: dict[str, Any], inputs: Any) -> Assignment:
    """`{user | role | candidateUsers | candidateRoles}` -> an Assignment; naming nobody is an error."""
    spec = config.get("assignment") or {}
    user = spec.get("user")
    roles = ([spec["role"]] if spec.get("role") else []) + list(spec.get("candidateRoles") or [])
    users = list(spec.get("candidateUsers") or [])
    result = Assignment(
        assignee=_fill(user, inputs) if user else None,
        candidate_users=[_fill(u, inputs) for u in users],
        candidate_roles=[_fill(r, inputs) for r in roles],
    )
    if not (result.assignee or result.candidate_users or result.candidate_roles):
        raise ValidationFailed("assignment names no one",
                               details=[{"field": "executionConfig.assignment", "message": "empty"}])
    return result
