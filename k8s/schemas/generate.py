"""Regenerate the vendored CRD schemas in this folder (see README.md). Not used at test time.

    python3 -m venv /tmp/crd && /tmp/crd/bin/pip install \
        cloudcoil-models-keda==2.16.1.0 cloudcoil-models-prometheus-operator==0.80.1.0
    /tmp/crd/bin/python k8s/schemas/generate.py

The cloudcoil model packages (PyPI) are generated from the projects' CRD openAPIV3Schema; their
pydantic JSON schema is turned back into a strict JSON schema (draft 2020-12) here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _clean(node: Any) -> Any:
    if isinstance(node, list):
        return [_clean(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _clean(v) for k, v in node.items() if k not in ("title", "default")}
    any_of = out.get("anyOf")
    if isinstance(any_of, list):  # pydantic's Optional[X]: the API server takes X, not null
        kept = [s for s in any_of if s != {"type": "null"}]
        if len(kept) == 1:
            del out["anyOf"]
            out.update(kept[0])
        else:
            out["anyOf"] = kept
    pattern = out.get("pattern")
    if isinstance(pattern, str) and pattern.startswith("^(?i)"):  # Go RE2 allows the flag late; Python not
        out["pattern"] = "(?i)^" + pattern[len("^(?i)"):]
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False  # like `kubectl apply --validate=strict`
    return out


def export(model: Any, name: str, source: str) -> None:
    schema = _clean(model.model_json_schema(by_alias=True, mode="validation"))
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$comment": source, **schema}
    (HERE / name).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")


def main() -> None:
    from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
    from cloudcoil.models.prometheus_operator.v1 import PrometheusRule, ServiceMonitor

    keda = "from the KEDA v2.16.1 CRDs via PyPI cloudcoil-models-keda 2.16.1.0 (k8s/schemas/generate.py)"
    prom = ("from the prometheus-operator v0.80.1 CRDs via PyPI cloudcoil-models-prometheus-operator 0.80.1.0 "
            "(k8s/schemas/generate.py)")
    export(ScaledObject, "scaledobject-keda-v1alpha1.json", keda)
    export(TriggerAuthentication, "triggerauthentication-keda-v1alpha1.json", keda)
    export(PrometheusRule, "prometheusrule-monitoring-v1.json", prom)
    export(ServiceMonitor, "servicemonitor-monitoring-v1.json", prom)


if __name__ == "__main__":
    main()
