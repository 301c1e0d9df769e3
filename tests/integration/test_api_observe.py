"""The router's request hooks: request id and trace context in and out, the JSON access log line, the
HTTP metrics by route template, and the ids stored with a task the request created (real PostgreSQL)."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.api_helpers import API, create_definition

TASKS = f"{API}/tasks"
ROUTE = "/api/v1/tasks/<task_id>"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The access log's records, as the fields the JSON formatter writes."""
    return [vars(r) for r in caplog.records if r.name == "taskexec.access"]


def test_request_id_and_traceparent_are_answered_logged_and_stored(
        client: Any, admin: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    create_definition(client, admin)
    caplog.set_level(logging.INFO, logger="taskexec.access")
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = client.post(TASKS, json={"taskDefinitionId": "greet", "input": {"name": "Ada"}},
                    headers={**admin, "X-Request-Id": "req-42", "traceparent": parent})
    assert r.status_code == 201, r.json
    assert r.headers["X-Request-Id"] == "req-42"
    version, trace_id, span_id, flags = r.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    assert span_id != "00f067aa0ba902b7" and re.fullmatch(r"[0-9a-f]{16}", span_id)  # the router's own span

    (line,) = [x for x in access_lines(caplog) if x["route"] == TASKS]
    assert [line[k] for k in ("method", "status", "principal", "requestId", "traceId")] == [
        "POST", 201, "admin", "req-42", "4bf92f3577b34da6a3ce929d0e0e4736"]
    assert line["durationMs"] >= 0 and line["path"] == TASKS

    meta = client.get(f"{TASKS}/{r.json['id']}", headers=admin).json["executionMetadata"]
    assert meta["requestId"] == "req-42" and meta["traceparent"].split("-")[1] == trace_id


@pytest.mark.parametrize(("request_id", "traceparent"), [
    ("bad id with spaces", "00-zz-00f067aa0ba902b7-01"),
    ("x" * 129, "00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
    ("ok;<script>", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
])
def test_malformed_ids_are_replaced_never_echoed(client: Any, admin: dict[str, str], request_id: str,
                                                traceparent: str) -> None:
    r = client.get(f"{TASKS}/no-such-task", headers={**admin, "X-Request-Id": request_id,
                                                      "traceparent": traceparent})
    assert r.status_code == 404
    assert r.headers["X-Request-Id"] != request_id and re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-Id"])
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", r.headers["traceparent"])
    assert r.headers["traceparent"].split("-")[1] not in traceparent


def test_metrics_use_the_route_template_and_probes_stay_quiet(
        client: Any, admin: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    labels = {"method": "GET", "route": ROUTE, "status": "404"}
    before = REGISTRY.get_sample_value("taskexec_http_requests_total", labels) or 0.0
    timed = REGISTRY.get_sample_value("taskexec_http_request_duration_seconds_count",
                                      {"method": "GET", "route": ROUTE}) or 0.0
    caplog.set_level(logging.INFO, logger="taskexec.access")
    for n in range(3):  # three ids, one series
        assert client.get(f"{TASKS}/missing-{n}", headers=admin).status_code == 404
    assert client.get("/health").status_code == 200
    assert REGISTRY.get_sample_value("taskexec_http_requests_total", labels) == before + 3
    assert REGISTRY.get_sample_value("taskexec_http_request_duration_seconds_count",
                                     {"method": "GET", "route": ROUTE}) == timed + 3
    assert not [x for x in access_lines(caplog) if x["route"] == "/health"], "probes are logged at DEBUG only"
    assert client.get("/no/such/path").status_code == 404
    assert REGISTRY.get_sample_value("taskexec_http_requests_total",
                                     {"method": "GET", "route": "<unmatched>", "status": "404"})
