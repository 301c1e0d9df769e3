"""`GET /api/v1/me`: the caller's identity, roles and permissions, so pages offer only allowed actions."""

from __future__ import annotations

from flask import Blueprint, jsonify

from api.routing import operation
from api.security import current
from taskexec.contract.schemas import MeOut
from taskexec.core.constants import API_PREFIX, Permission

bp = Blueprint("me", __name__, url_prefix=API_PREFIX)


@operation(bp, "GET", "/me", summary="Who you are and what you may do", response=MeOut,
           description="Any valid credential. `permissions` is expanded (an admin lists every permission).")
def me():
    who = current()
    perms = sorted(p.value for p in Permission if who.has(p))
    extra = sorted(set(who.permissions) - set(perms))
    return jsonify(MeOut(sub=who.sub, kind="api_key" if who.kind == "api_key" else "jwt", roles=list(who.roles),
                         permissions=perms + extra).model_dump(by_alias=True))
