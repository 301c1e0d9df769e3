"""The shipped alert rules with Debian's promtool (check and unit tests: every alert fires in its scenario and
stays quiet otherwise), the generated plain rules file, and the Grafana dashboard's structure and metric
names. A real Prometheus runs them all against a live stack in tests/e2e/test_prometheus.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import monitoring_support as mon
from tests.unit.test_alert_rules import PROMETHEUS_SERIES, defined_series


def promtool(*args: str, cwd: Path = mon.RULE_TESTS.parent) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool") or "/usr/bin/promtool"
    assert Path(binary).exists(), "promtool missing: run scripts/bootstrap.sh (Debian package prometheus)"
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------ alert rules


def test_rules_file_is_the_prometheus_rule_spec() -> None:
    """monitoring/prometheus/rules.yml (compose's Prometheus, promtool) is generated from the PrometheusRule."""
    spec = yaml.safe_load(mon.RULES_CRD.read_text())["spec"]
    assert yaml.safe_load(mon.RULES_FILE.read_text()) == spec
    check = subprocess.run([sys.executable, str(mon.ROOT / "scripts" / "alert_rules.py"), "--check"],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


def test_promtool_check_rules_and_config() -> None:
    out = promtool("check", "rules", str(mon.RULES_FILE))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(mon.alert_rules())} rules found" in out.stdout
    out = promtool("check", "config", str(mon.SCRAPE_CONFIG))  # compose's scrape config, with its rule files
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_pass() -> None:
    out = promtool("test", "rules", str(mon.RULE_TESTS))
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_every_alert_has_a_firing_and_a_quiet_scenario() -> None:
    doc = yaml.safe_load(mon.RULE_TESTS.read_text())
    assert doc["rule_files"] == [mon.RULES_FILE.name]
    fires: set[str] = set()
    quiet: set[str] = set()
    for group in doc["tests"]:
        for case in group.get("alert_rule_test", []):
            (fires if case["exp_alerts"] else quiet).add(case["alertname"])
            for alert in case["exp_alerts"]:  # the annotations are checked too: templates render
                assert alert["exp_annotations"]["runbook_url"].startswith("docs/monitoring.md#")
    alerts = {r["alert"] for r in mon.alert_rules()}
    assert alerts - fires == set(), "alerts without a scenario in which they fire"
    assert alerts - quiet == set(), "alerts without a scenario in which they stay quiet"


def test_the_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """promtool's unit tests fail when a rule changes: here the stalled-consumer alert watches the wrong value."""
    shutil.copy(mon.RULE_TESTS, tmp_path / mon.RULE_TESTS.name)
    rules = mon.RULES_FILE.read_text()
    broken = rules.replace("max by (pool, hostname) (taskexec_worker_consumer_stalled) == 1",
                           "max by (pool, hostname) (taskexec_worker_consumer_stalled) == 2")
    assert broken != rules
    (tmp_path / mon.RULES_FILE.name).write_text(broken)
    out = promtool("test", "rules", mon.RULE_TESTS.name, cwd=tmp_path)
    assert out.returncode != 0 and "TaskConsumerStalled" in out.stdout + out.stderr


# ------------------------------------------------------------------ PromQL selectors (the tests' parser)


@pytest.mark.parametrize(("expr", "expected"), [
    ('sum by (type, le) (rate(task_queue_time_seconds_bucket{type="A"}[5m]))',
     ['task_queue_time_seconds_bucket{type="A"}']),
    ("max by (queue_name) (a) > 0 and on (queue_name) group_left (x) max without (b) (b_total) == 0",
     ["a", "b_total"]),
    ('absent(up{job=~"x|y"}) or vector(0)', ['up{job=~"x|y"}']),
    ('sort_desc(sum by (o) (increase(t_total{o!="C"}[$__range])) offset 1h30m) > bool 2', ['t_total{o!="C"}']),
    ('label_replace(m{l="}"}, "dst", "$1", "src", "(.*)")', ['m{l="}"}']),
])
def test_selectors(expr: str, expected: list[str]) -> None:
    assert mon.selectors(expr) == expected


# ------------------------------------------------------------------ Grafana dashboard


def _panels() -> list[dict[str, Any]]:
    return [p for p in mon.dashboard_panels() if p["type"] != "row"]


def test_dashboard_is_grafana_json_with_a_datasource_variable() -> None:
    board = mon.dashboard()
    assert board["uid"] == "taskexec-overview" and board["title"]
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    (variable,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["name"] == "datasource" and variable["query"] == "prometheus"
    ids = [p["id"] for p in mon.dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in mon.dashboard_panels():
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        x0, y0 = grid["x"], grid["y"]
        mine = {(x, y) for x in range(x0, x0 + grid["w"]) for y in range(y0, y0 + grid["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
    for panel in _panels():
        assert panel["type"] in {"timeseries", "stat", "bargauge", "state-timeline"}, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and panel.get("description"), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip(), panel["title"]


def test_dashboard_uses_only_defined_metrics() -> None:
    known = defined_series() | PROMETHEUS_SERIES
    for title, expr in mon.dashboard_queries():
        used = mon.metric_names(expr)
        assert used and used <= known, (title, used - known)
        assert not [n for n in used if n.startswith("flower_")], (title, "Flower's names are never ours")


@pytest.mark.parametrize(("topic", "series"), [
    ("throughput", {"taskexec_tasks_finished_total", "taskexec_tasks_submitted_total"}),
    ("queue time per type", {"task_queue_time_seconds_bucket"}),
    ("run time per type", {"task_execution_time_seconds_bucket"}),
    ("queue depth per priority", {"taskexec_queue_length"}),
    ("pool utilisation", {"celery_worker_tasks_active", "taskexec_worker_concurrency"}),
    ("error codes", {"taskexec_attempts_total"}),
    ("breaker state", {"taskexec_integration_circuit_state"}),
    ("outbox backlog", {"taskexec_outbox_backlog"}),
    ("manual deadlines", {"taskexec_manual_tasks_by_deadline"}),
    ("HTTP latency per route", {"taskexec_http_request_duration_seconds_bucket"}),
    ("stalled consumers", {"taskexec_worker_consumer_stalled"}),
])
def test_dashboard_covers(topic: str, series: set[str]) -> None:
    used = {name for _, expr in mon.dashboard_queries() for name in mon.metric_names(expr)}
    assert series <= used, (topic, series - used)
