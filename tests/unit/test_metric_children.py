"""`metrics.child`: the series `labels()` gives, looked up once, and labels of other values kept apart."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

from taskexec.observability import metrics


def test_child_is_the_metrics_own_series_and_remembered() -> None:
    registry = CollectorRegistry()  # not the process's registry: nothing else sees this counter
    counter = Counter("child_test_calls", "calls", ["target", "outcome"], registry=registry)
    ok = metrics.child(counter, target="a", outcome="ok")
    assert ok is counter.labels(target="a", outcome="ok")
    assert metrics.child(counter, target="a", outcome="ok") is ok
    failed = metrics.child(counter, target="a", outcome="failed")
    assert failed is not ok
    ok.inc()
    ok.inc()
    failed.inc()
    text = generate_latest(registry).decode()
    assert 'child_test_calls_total{outcome="ok",target="a"} 2.0' in text
    assert 'child_test_calls_total{outcome="failed",target="a"} 1.0' in text
