"""Debian's real Prometheus scraping a running stack (router and the three pools, real processes), with the
shipped scrape settings (monitoring/prometheus/prometheus.yml: job names, `pool` labels, honor_labels) and
the shipped alert rules. After a few real tasks, every series selector in every Grafana dashboard query and
every alert expression must select series that exist, and Prometheus must evaluate every rule and every
dashboard query without error."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests import monitoring_support as mon
from tests.e2e.helpers import define, python_def, submit, wait_status
from tests.http_target import Reply, Target, json_reply, sequence
from tests.integration_support import FAST_RETRY, http_def, start_pool
from tests.manual_support import manual_def
from tests.support import Proc, Stack, free_port, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

POOL_JOBS = {"automated": "automated-task-executor", "manual": "manual-task-handler",
             "integration": "integration-task-executor"}
# Series that exist only after an event this test does not cause, each with the reason. Keep it short:
# prefer causing the event.
EXEMPT: dict[str, str] = {}


def prometheus_config(router_port: int, pool_ports: dict[str, int], scrape: str = "1s") -> dict[str, Any]:
    """The shipped compose scrape config with its DNS discovery replaced by this machine's ports."""
    config = copy.deepcopy(yaml.safe_load(mon.SCRAPE_CONFIG.read_text()))
    config["global"].update({"scrape_interval": scrape, "evaluation_interval": scrape, "scrape_timeout": scrape})
    config["rule_files"] = [str(mon.SCRAPE_CONFIG.parent / f) for f in config["rule_files"]]
    ports = {"task-router": router_port, **{POOL_JOBS[pool]: port for pool, port in pool_ports.items()}}
    assert {job["job_name"] for job in config["scrape_configs"]} == set(ports)
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs")
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
    return config


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """A function starting Debian's prometheus on a free 127.0.0.1 port with a given config; its base URL."""
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    assert Path(binary).exists(), "prometheus missing: run scripts/bootstrap.sh (Debian package prometheus)"
    procs: list[Proc] = []

    def start(config: dict[str, Any]) -> str:
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        proc = Proc([binary, f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], {"PATH": "/usr/bin:/bin"},
                    tmp_path / "prometheus.log")
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(url, "/-/ready") == 200 or proc.popen.poll() is not None, 30, what="prometheus ready")
        assert proc.popen.poll() is None, proc.text()[-3000:]
        return url

    yield start
    for proc in procs:
        proc.stop()
        if proc.popen.returncode not in (0, -15):
            print(proc.text()[-3000:])


def _get(url: str, path: str) -> int:
    try:
        return requests.get(url + path, timeout=2).status_code
    except requests.RequestException:
        return 0


def api(url: str, path: str, **params: str) -> Any:
    r = requests.get(f"{url}/api/v1/{path}", params=params, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (path, params, body)
    return body["data"]


def run_tasks(stack: Stack, target: Target) -> None:
    """What fills the series: automated tasks that complete and fail (sandbox), an integration call that is
    retried once (503) then completes, and a manual task assigned to a role."""
    define(stack, python_def("prom-ok", "def main(input):\n    return {'ok': True}\n"))
    define(stack, python_def("prom-fail", "import sys\ndef main(input):\n    sys.exit(3)\n"))
    define(stack, http_def("prom-http", target.on("/orders", sequence(Reply(503, {}), json_reply({"id": 1}))),
                           retry=FAST_RETRY))
    define(stack, manual_def("prom-review"))
    ids = [submit(stack, d).json()["id"] for d in ("prom-ok", "prom-ok", "prom-fail", "prom-http")]
    manual = submit(stack, "prom-review").json()["id"]
    finished = [wait_status(stack, t, timeout=90)["status"] for t in ids]
    assert finished == ["COMPLETED", "COMPLETED", "FAILED", "COMPLETED"], finished
    wait_status(stack, manual, {"ASSIGNED"}, timeout=30)


def test_prometheus_scrapes_the_stack_and_every_shipped_query_names_existing_series(
        stack: Stack, prometheus: Any) -> None:
    ports = {pool: free_port() for pool in POOL_JOBS}
    stack.start_worker("automated", concurrency=2, TEL_METRICS_PORT=str(ports["automated"]))
    stack.start_worker("manual", concurrency=2, TEL_METRICS_PORT=str(ports["manual"]))
    start_pool(stack, concurrency=2, TEL_METRICS_PORT=str(ports["integration"]))
    target = Target()
    try:
        run_tasks(stack, target)
    finally:
        target.close()
    url = prometheus(prometheus_config(stack.port, ports))

    # every target up, each pool's with its pool label
    def targets_up() -> list[dict[str, Any]] | None:
        active = api(url, "targets", state="active")["activeTargets"]
        return active if len(active) == 4 and all(t["health"] == "up" for t in active) else None

    active = wait_for(targets_up, 30, what="all four targets up")
    assert {(t["labels"]["job"], t["labels"].get("pool")) for t in active} == {
        ("task-router", None), *((job, pool) for pool, job in POOL_JOBS.items())}

    # every selector of every dashboard query and alert rule selects series (a few scrapes may be needed)
    wanted = {sel: f"dashboard: {title}" for title, expr in mon.dashboard_queries() for sel in mon.selectors(expr)}
    wanted.update({sel: f"alert {r['alert']}" for r in mon.alert_rules() for sel in mon.selectors(r["expr"])})
    checked = {sel: where for sel, where in wanted.items() if mon.metric_name(sel) not in EXEMPT}

    def missing() -> dict[str, str]:
        return {sel: where for sel, where in checked.items() if not api(url, "query", query=f"count({sel})")["result"]}

    try:
        wait_for(lambda: not missing(), 30, interval=1, what="every selector to have series")
    except AssertionError:
        pytest.fail(f"selectors without series (metric name: used by): {missing()}")

    # worker series carry the job's pool; the ones naming their pool themselves keep it (honor_labels)
    up = api(url, "query", query="celery_worker_up")["result"]
    assert sorted(s["metric"].get("pool") for s in up) == sorted(POOL_JOBS), up
    attempts = api(url, "query", query="taskexec_attempts_total")["result"]
    assert {s["metric"]["pool"] for s in attempts} >= {"automated", "integration"}, attempts
    assert not api(url, "query", query='{exported_pool!=""}')["result"]
    failed = api(url, "query", query='taskexec_attempts_total{pool="automated", outcome="NON_ZERO_EXIT"}')["result"]
    assert failed and float(failed[0]["value"][1]) >= 1, failed

    # Prometheus parses and runs every dashboard query, and evaluates every rule without error
    for title, expr in mon.dashboard_queries():
        api(url, "query", query=mon.grafana_substitute(expr))  # asserts status success
        assert "$" not in mon.grafana_substitute(expr), (title, expr)

    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in api(url, "rules")["groups"] for r in g["rules"]]
        return rules if rules and all(r["health"] != "unknown" for r in rules) else None

    rules = wait_for(evaluated, 20, interval=1, what="every rule evaluated")
    assert {r["name"] for r in rules} == {r["alert"] for r in mon.alert_rules()}
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
