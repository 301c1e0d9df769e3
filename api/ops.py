"""Liveness and readiness: no credentials needed (`/metrics` is in `api.metrics`)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from api.routing import operation
from api.runtime import runtime
from taskexec.contract.schemas import HealthOut, ReadyOut

bp = Blueprint("ops", __name__)
READY: dict[str, Any] = {"summary": "Readiness: database and broker reachable (/ready and /health/readiness)",
                         "auth": False, "response": ReadyOut, "also": {503: "a dependency is unreachable"}}


@operation(bp, "GET", "/health", summary="Liveness", auth=False, response=HealthOut)
def health():
    return jsonify({"status": "UP"})


@operation(bp, "GET", "/health/readiness", **READY)
@operation(bp, "GET", "/ready", **READY)
def ready():
    rt = runtime()
    checks = {"database": rt.db.ping(), "broker": rt.publisher.ping()}
    ok = all(checks.values())
    body: dict[str, Any] = {"status": "UP" if ok else "DOWN",
                            "checks": {k: "UP" if v else "DOWN" for k, v in checks.items()}}
    if not ok:
        body["error"] = {"code": "UNAVAILABLE", "message": "a dependency is unreachable", "details": body["checks"]}
    return jsonify(body), (200 if ok else 503)
