"""Liveness and readiness: no credentials needed (`/metrics` is in `api.metrics`)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from api.runtime import runtime

bp = Blueprint("ops", __name__)


@bp.get("/health")
def health():  # type: ignore[no-untyped-def]
    return jsonify({"status": "UP"})


@bp.get("/ready")
@bp.get("/health/readiness")
def ready():  # type: ignore[no-untyped-def]
    rt = runtime()
    checks = {"database": rt.db.ping(), "broker": rt.publisher.ping()}
    ok = all(checks.values())
    body = {"status": "UP" if ok else "DOWN", "checks": {k: "UP" if v else "DOWN" for k, v in checks.items()}}
    if not ok:
        body["error"] = {"code": "UNAVAILABLE", "message": "a dependency is unreachable", "details": body["checks"]}
    return jsonify(body), (200 if ok else 503)
