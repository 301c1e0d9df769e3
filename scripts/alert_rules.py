#!/usr/bin/env python3
"""Write monitoring/prometheus/rules.yml, the plain Prometheus rules file, from the PrometheusRule.

    python3 scripts/alert_rules.py          # regenerate
    python3 scripts/alert_rules.py --check  # exit 1 if rules.yml is stale

k8s/base/prometheus-rules.yaml is the one source of the alert rules; its `spec` is a rules file, which a
Prometheus without the operator (compose.yaml's, promtool, tests/e2e/test_prometheus.py) loads as
rules.yml. The `spec` block is copied as text, two spaces less indented, so comments and layout stay.
Standard library only: it runs before the virtualenv exists.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "k8s" / "base" / "prometheus-rules.yaml"
TARGET = ROOT / "monitoring" / "prometheus" / "rules.yml"
HEADER = ("# GENERATED from k8s/base/prometheus-rules.yaml (its `spec`) by scripts/alert_rules.py: edit that\n"
          "# file, then run `python3 scripts/alert_rules.py`. Tests fail while the two differ.\n")


def render(source: str) -> str:
    lines = source.splitlines()
    start = lines.index("spec:") + 1
    body = []
    for line in lines[start:]:
        if line.strip() and not line.startswith("  "):
            raise ValueError(f"unexpected top-level line after spec: {line!r}")
        body.append(line[2:])
    return HEADER + "\n".join(body).rstrip() + "\n"


def main(argv: list[str]) -> int:
    wanted = render(SOURCE.read_text())
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text() != wanted:
            print(f"{TARGET.relative_to(ROOT)} is stale: run python3 scripts/alert_rules.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(wanted)
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
