"""The shipped monitoring files, read the way Prometheus and Grafana read them: the alert rules, the Grafana
dashboard's queries, the compose scrape config, and the series selectors inside a PromQL expression.

Used by the unit tests (names and structure) and by tests/e2e/test_prometheus.py (a real Prometheus)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES_CRD = ROOT / "k8s" / "base" / "prometheus-rules.yaml"
MONITORING = ROOT / "monitoring"
RULES_FILE = MONITORING / "prometheus" / "rules.yml"
RULE_TESTS = MONITORING / "prometheus" / "tests.yml"
SCRAPE_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "taskexec.json"
# Grafana's interval variables, as Grafana would substitute them for a short look at a fresh Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s"}

_TOKEN = re.compile(r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<range>\[[^\]]*\])
  | (?P<matchers>\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\})
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+\b)
  | (?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?\b)
  | (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<variable>\$\w+)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<space>\s+)
  | (?P<other>.)
""", re.VERBOSE)
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "inf", "nan", "atan2"}
_LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
                 "topk", "quantile", "limitk", "limit_ratio"}  # `sum by (x) (...)`: followed by by/without


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the PrometheusRule (the one source of the rules)."""
    doc = yaml.safe_load(RULES_CRD.read_text())
    return [rule for group in doc["spec"]["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every query of the dashboard."""
    return [(p["title"], t["expr"]) for p in dashboard_panels() for t in p.get("targets", [])]


def grafana_substitute(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def selectors(expr: str) -> list[str]:
    """The instant-vector selectors of a PromQL expression (`name` or `name{matchers}`), in order.

    Function and aggregation names (an identifier before `(`), keywords, the label lists after by/without/
    on/ignoring/group_left/group_right, strings, numbers and ranges are not selectors."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr) if m.lastgroup != "space"]
    found: list[str] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else (None, "")
        if kind == "name" and text.lower() in _LABEL_LIST_KEYWORDS and following[0] == "open":
            i += 2
            while i < len(tokens) and tokens[i][0] != "close":  # skip the label list
                i += 1
        elif kind == "name" and text.lower() in _AGGREGATIONS and following[1].lower() in ("by", "without"):
            pass
        elif kind == "name" and text.lower() not in _KEYWORDS and following[0] != "open":
            if following[0] == "matchers":
                found.append(text + following[1])
                i += 1
            else:
                found.append(text)
        i += 1
    return found


def metric_name(selector: str) -> str:
    return selector.split("{", 1)[0]


def metric_names(expr: str) -> set[str]:
    return {metric_name(s) for s in selectors(expr)}
