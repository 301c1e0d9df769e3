"""Definitions and small helpers shared by the manual-task tests."""

from __future__ import annotations

from typing import Any

from tests.conftest import auth

OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean", "title": "Approved"},
        "score": {"type": "integer", "minimum": 1, "maximum": 5, "title": "Score"},
        "decision": {"enum": ["accept", "reject", "defer"]},
        "comment": {"type": "string", "maxLength": 500},
    },
    "required": ["approved", "score"],
}


def manual_def(def_id: str = "review", assignment: dict[str, Any] | None = None, **config: Any) -> dict[str, Any]:
    """A MANUAL definition; by default offered to the role `reviewers`."""
    return {
        "id": def_id,
        "name": f"Review ({def_id})",
        "description": "Check the document and decide.",
        "type": "MANUAL",
        "inputSchema": {"type": "object"},
        "outputSchema": OUTPUT_SCHEMA,
        "executionConfig": {"assignment": assignment or {"role": "reviewers"}, **config},
    }


def operator(sub: str, *roles: str) -> dict[str, str]:
    """Headers of a human operator holding `roles` besides `operator`."""
    return {**auth(sub, "operator", *roles), "User-Agent": f"pytest-{sub}"}


GOOD_OUTPUT = {"approved": True, "score": 4, "decision": "accept"}
