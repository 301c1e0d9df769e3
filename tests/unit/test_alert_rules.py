"""The alert rules file: a valid PrometheusRule whose expressions use only metrics taskexec defines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import yaml
from prometheus_client.metrics import MetricWrapperBase

from taskexec.observability import metrics
from tests.monitoring_support import metric_names

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "k8s" / "base" / "prometheus-rules.yaml"
SCHEMA = ROOT / "k8s" / "schemas" / "prometheusrule-monitoring-v1.json"
METRIC = re.compile(r"\b((?:taskexec|task|celery|flower)_[a-z0-9_]+)\b")
PROMETHEUS_SERIES = {"up"}  # written by Prometheus itself for every target


def defined_series() -> set[str]:
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            base = value._name  # noqa: SLF001 - the registered name, without the `_total` suffix
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(value._type, [""])
            names |= {base + s for s in suffixes}
        elif isinstance(value, str) and METRIC.fullmatch(value):
            names.add(value)
    return names


def test_rules_are_a_valid_prometheus_rule() -> None:
    doc = yaml.safe_load(RULES.read_text())
    assert doc["kind"] == "PrometheusRule"
    if SCHEMA.exists():
        jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    alerts = {r["alert"] for g in doc["spec"]["groups"] for r in g["rules"]}
    assert {"TaskFailureRatioHigh", "TaskQueueTimeP95High", "TaskPoolNoWorkerOnline", "OutboxBacklogGrowing"} <= alerts


def test_rules_use_only_defined_metrics() -> None:
    known = defined_series()
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["spec"]["groups"]:
        for rule in group["rules"]:
            used = metric_names(rule["expr"])
            assert used and used <= known | PROMETHEUS_SERIES, (rule["alert"], used - known)
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["runbook_url"].startswith("docs/monitoring.md#")


def test_a_queue_with_messages_and_no_consumer_alerts() -> None:
    """The rule joins the two scrape-time gauges per queue: messages waiting AND nobody consuming."""
    doc = yaml.safe_load(RULES.read_text())
    rules = {r["alert"]: r for g in doc["spec"]["groups"] for r in g["rules"]}
    rule = rules["TaskQueueWithoutConsumer"]
    expr = " ".join(rule["expr"].split())
    assert expr == ("max by (queue_name) (celery_queue_length) > 0 and on (queue_name) "
                    "max by (queue_name) (celery_active_worker_count) == 0")
    assert rule["labels"]["severity"] == "critical" and rule["for"] == "5m"
    assert metrics.CELERY_QUEUE_LENGTH in expr and metrics.CELERY_ACTIVE_WORKER_COUNT in expr
    timeouts = rules["TasksTimedOutInQueue"]
    assert metrics.TASK_QUEUE_TIMEOUTS._name in timeouts["expr"]  # noqa: SLF001 - the registered name
