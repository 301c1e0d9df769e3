"""Principal permissions per role (the role table of docs/api.md, "Authentication and permissions")."""

from __future__ import annotations

import pytest

from taskexec.core.constants import Permission as P
from taskexec.core.exceptions import Forbidden
from taskexec.store.auth import Principal

SUBMITTER = {P.EXECUTE, P.READ, P.LIST, P.CANCEL, P.DEFINITIONS_LIST, P.DEFINITIONS_READ}
EXPECTED: dict[str, set[P]] = {
    "admin": set(P),
    "developer": SUBMITTER | {P.DEFINITIONS_WRITE},
    "submitter": SUBMITTER,
    "operator": {P.READ, P.LIST, P.CLAIM, P.COMPLETE},
}


def granted(p: Principal) -> set[P]:
    return {perm for perm in P if p.has(perm)}


@pytest.mark.parametrize("role", ["admin", "developer", "submitter", "operator"])
def test_role_grants_exactly_the_contract_permissions(role: str) -> None:
    assert granted(Principal("u", (role,))) == EXPECTED[role]


def test_service_has_internal_and_nothing_a_human_role_needs() -> None:
    perms = granted(Principal("svc", ("service",)))
    assert P.INTERNAL in perms
    assert not perms & {P.EXECUTE, P.CANCEL, P.DEFINITIONS_WRITE, P.CLAIM, P.COMPLETE, P.REASSIGN, P.ADMIN}


@pytest.mark.parametrize("role", ["developer", "submitter", "operator", "service"])
def test_only_admin_is_admin(role: str) -> None:
    assert not Principal("u", (role,)).is_admin
    assert Principal("u", ("admin",)).is_admin


def test_unknown_role_grants_nothing() -> None:
    assert granted(Principal("u", ("root",))) == set()


def test_roles_combine_and_extra_permissions_add() -> None:
    p = Principal("u", ("operator",), extra_permissions=(P.REASSIGN.value,))
    assert granted(p) == EXPECTED["operator"] | {P.REASSIGN}
    assert granted(Principal("u", ("operator", "submitter"))) == EXPECTED["operator"] | SUBMITTER


def test_admin_permission_claim_grants_all() -> None:
    assert granted(Principal("u", (), extra_permissions=("admin",))) == set(P)


def test_require_raises_forbidden_naming_permission() -> None:
    with pytest.raises(Forbidden) as exc:
        Principal("u", ("submitter",)).require(P.DEFINITIONS_WRITE)
    assert exc.value.status == 403
    assert exc.value.details == {"permission": "tasks:definitions:write"}
    Principal("u", ("developer",)).require(P.DEFINITIONS_WRITE)
