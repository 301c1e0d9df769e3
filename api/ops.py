"""Liveness and readiness: no credentials needed (`/metrics` is in `api.metrics`)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from api.runtime import runtime

bp = Blueprint("ops", __name__)


@bp.get("/health")
def health():
    return jsonify({"status": "UP"})


@bp.get("/ready")
@bp.get("/health/readiness")
def ready():
    rt = runtime()
    checks = {"database": rt.db.ping(), "broker": rt.publisher.ping()}
    ok = all(checks.values())
    body: dict[str, Any] = {"status": "UP" if ok else "DOWN",
                            "checks": {k: "UP" if v else "DOWN" for k, v in checks.items()}}
    if not ok:
        body["error"] = {"code": "UNAVAILABLE", "message": "a dependency is unreachable", "details": body["checks"]}
    return jsonify(body), (200 if ok else 503)
