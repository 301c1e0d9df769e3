"""The one rule of who may see a task (taskexec.store.visibility), used by the task API, the inbox and the
manual service."""

from __future__ import annotations

import pytest

from taskexec.core.constants import ROLE_PERMISSIONS, Permission
from taskexec.store.auth import Principal
from taskexec.store.models import TaskInstance
from taskexec.store.visibility import SEES_EVERY_TASK, can_see, sees_every_task


def _task(assignee: str | None = None, users: list[str] | None = None, roles: list[str] | None = None) -> TaskInstance:
    return TaskInstance(id="t1", assignee=assignee, candidate_users=users, candidate_roles=roles)


@pytest.mark.parametrize("role", ["admin", "developer", "submitter", "service", "monitor"])
def test_roles_that_see_every_task(role: str) -> None:
    who = Principal(sub="someone", roles=(role,))
    assert sees_every_task(who)
    assert can_see(_task(assignee="other", roles=["elsewhere"]), who)
    assert can_see(_task(), who)


@pytest.mark.parametrize("permission", SEES_EVERY_TASK)
def test_each_permission_of_the_rule_grants_every_task(permission: Permission) -> None:
    who = Principal(sub="p", extra_permissions=(permission.value,))
    assert can_see(_task(assignee="other"), who)


def test_reassign_alone_sees_every_task() -> None:
    # the manual service allowed `tasks:reassign`, the task API `tasks:monitor`: the one rule allows both
    assert can_see(_task(assignee="other"), Principal(sub="lead", extra_permissions=(Permission.REASSIGN.value,)))
    assert can_see(_task(assignee="other"), Principal(sub="ops", roles=("monitor",)))


def test_operator_sees_only_what_is_theirs_or_offered() -> None:
    alice = Principal(sub="alice", roles=("operator", "reviewers"))
    assert not sees_every_task(alice)
    assert can_see(_task(assignee="alice"), alice)
    assert can_see(_task(users=["bob", "alice"]), alice)
    assert can_see(_task(roles=["reviewers"]), alice)
    assert not can_see(_task(assignee="bob"), alice)
    assert not can_see(_task(users=["bob"], roles=["approvers"]), alice)
    assert not can_see(_task(), alice)


def test_no_operator_permission_grants_every_task() -> None:
    # the read and list permissions an operator holds must not widen the rule
    assert not set(SEES_EVERY_TASK) & ROLE_PERMISSIONS["operator"]
