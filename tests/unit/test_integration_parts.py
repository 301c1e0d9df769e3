"""Integration pool pieces without a network: redaction, Retry-After, idempotency keys, templates, limits."""

from __future__ import annotations

import pytest

from taskexec.core.config import Settings
from workers.integration.http import Reply, classify, host_key, retry_after_ms
from workers.integration.ratelimit import rate_for
from workers.integration.redact import Redactor
from workers.integration.request import idempotency_key, timeouts
from workers.templates import TemplateError, render


def test_redactor_masks_values_encodings_and_secret_params() -> None:
    r = Redactor()
    r.add("p@ss/word!")
    r.add_basic("svc", "hunter22")
    assert r.text("x p@ss/word! y p%40ss%2Fword%21") == "x *** y ***"
    assert r.deep({"k": ["Basic c3ZjOmh1bnRlcjIy"], "hunter22": 1}) == {"k": ["Basic ***"], "***": 1}
    assert r.url("https://bob:pw@api.example.com:8443/p?api_key=abc&q=1&sig=zz") == (
        "https://***@api.example.com:8443/p?api_key=***&q=1&sig=***")
    assert r.url("http://h/p/p@ss/word!/x", {"token": "t", "page": 2}) == "http://h/p/***/x?token=***&page=2"


def test_short_values_are_not_redacted_everywhere() -> None:
    r = Redactor()
    r.add("a")
    assert r.text("banana") == "banana"


def test_retry_after_parsing() -> None:
    assert retry_after_ms("2") == 2000
    assert retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412475.0) == 5000
    assert retry_after_ms("soon") is None and retry_after_ms(None) is None


@pytest.mark.parametrize("status, code, retry, breaker", [
    (408, "TIMEOUT_ERROR", True, False), (429, "RATE_LIMIT_ERROR", True, False),
    (502, "SERVICE_UNAVAILABLE", True, True), (503, "SERVICE_UNAVAILABLE", True, True),
    (504, "SERVICE_UNAVAILABLE", True, True), (401, "AUTHENTICATION_ERROR", False, False),
    (403, "AUTHENTICATION_ERROR", False, False), (404, "INTEGRATION_ERROR", False, False),
    (422, "INTEGRATION_ERROR", False, False), (500, "INTEGRATION_ERROR", False, True),
])
def test_classification(status: int, code: str, retry: bool, breaker: bool) -> None:
    failure = classify(Reply(status, {"Retry-After": "3"}, b"", 1), "http://h/x", "")
    assert failure is not None
    assert (failure.code.value, failure.retryable, failure.breaker) == (code, retry, breaker)
    if status in (429, 503):
        assert failure.details["retryAfterMs"] == 3000
    assert classify(Reply(204, {}, b"", 1), "http://h/x", "") is None


def test_idempotency_key_is_stable_per_dispatch() -> None:
    assert idempotency_key("t1", "d1") == idempotency_key("t1", "d1")
    assert idempotency_key("t1", "d1") != idempotency_key("t1", "d2")
    assert idempotency_key("t1", "d1").startswith("tel-t1-")


def test_host_key_timeouts_and_rates() -> None:
    assert host_key("https://API.example.com/x") == "api.example.com:443"
    assert host_key("http://h:8080/") == "h:8080"
    s = Settings(TEL_RATE_LIMIT_HOSTS="api.example.com=10/5s,h:8080=1000/min")  # type: ignore[call-arg]
    assert timeouts({}, s) == (5.0, 30.0)
    assert timeouts({"timeoutMs": 250, "connectTimeoutMs": 100}, s) == (0.1, 0.25)
    assert rate_for("api.example.com:443", {}, s) == (10, 5.0)
    assert rate_for("other:80", {}, s) == (100, 60.0)
    assert rate_for("other:80", {"rateLimit": {"requestsPerMinute": 30}}, s) == (30, 60.0)
    assert rate_for("h:8080", {"rateLimit": {"requestsPerMinute": 6000}}, s) == (1000, 60.0)


def test_templates_keep_types_and_name_missing_fields() -> None:
    def secret(ref: str) -> str:
        return {"tok": "T"}[ref]
    out = render({"n": "${input.n}", "s": "id-${input.n}", "h": "Bearer ${secrets.tok}"}, {"n": 5}, secret)
    assert out == {"n": 5, "s": "id-5", "h": "Bearer T"}
    with pytest.raises(TemplateError) as exc:
        render("${input.user.email}", {"user": {}}, secret)
    assert exc.value.reason == "MISSING_INPUT" and exc.value.field == "input.user.email"


def test_settings_reject_bad_rate_specs() -> None:
    from taskexec.core.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="TEL_RATE_LIMIT_HOSTS"):
        load_settings(TEL_RATE_LIMIT_HOSTS="nohost")
