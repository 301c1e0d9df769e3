"""Liveness, readiness and Prometheus metrics: no credentials needed."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

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


@bp.get("/metrics")
def metrics():  # type: ignore[no-untyped-def]
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
