"""`GET /metrics` on the router (no credentials, docs/api.md), and the state-change metrics hook."""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from flask.blueprints import BlueprintSetupState

from api.routing import operation
from api.runtime import runtime
from taskexec.broker.broker_stats import BrokerStats
from taskexec.observability.metrics import declare_queue_timeouts
from taskexec.observability.metrics_export import render
from taskexec.services import task_metrics
from taskexec.services.metrics_collector import StateCollector

bp = Blueprint("metrics", __name__)


@bp.record_once
def _start(state: BlueprintSetupState) -> None:
    task_metrics.install()
    declare_queue_timeouts(state.app.extensions["taskexec"].settings.queues)


def broker_stats() -> BrokerStats:
    """The router process's broker view (its worker list is cached between calls)."""
    ext = current_app.extensions
    if "taskexec.broker.broker_stats" not in ext:
        rt = runtime()
        ext["taskexec.broker.broker_stats"] = BrokerStats(rt.settings, rt.publisher.app)
    return ext["taskexec.broker.broker_stats"]


@operation(bp, "GET", "/metrics", summary="Prometheus metrics (text exposition format)", auth=False,
           response_schema={"type": "string"}, content_type="text/plain")
def metrics() -> Response:
    body, content_type = render([StateCollector(runtime().db, broker_stats())])
    return Response(body, content_type=content_type)
