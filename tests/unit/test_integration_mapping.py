"""The response-mapping language and the definition-time checks of INTEGRATION configs."""

from __future__ import annotations

import pytest

from taskexec.core.exceptions import ValidationFailed
from taskexec.core.integration_spec import check_integration, parse_rate, parse_rate_overrides, placeholders
from taskexec.core.mapping import MappingError, Response, apply, parse

BODY = {"data": {"id": "x1", "tags": ["a", "b"]}, "items": [{"id": 1}, {"id": 2}], "odd.key": 5}


@pytest.mark.parametrize("expr, expected", [
    ("$", BODY),
    ("$.data.id", "x1"),
    ("$.data.tags[1]", "b"),
    ("$.data.tags[-1]", "b"),
    ("$.items[*].id", [1, 2]),
    ("$['odd.key']", 5),
    ("$.missing?", None),
    ("$status", 201),
    ("$headers.content-type", "application/json"),
])
def test_expressions(expr: str, expected: object) -> None:
    resp = Response(BODY, True, 201, {"Content-Type": "application/json"})
    assert apply({"v": expr}, resp) == {"v": expected}


def test_nested_mapping_literals_and_escape() -> None:
    resp = Response(BODY, True)
    mapping = {"a": {"b": ["$.data.id", 3]}, "lit": "plain", "money": "$$5", "n": None}
    assert apply(mapping, resp) == {"a": {"b": ["x1", 3]}, "lit": "plain", "money": "$5", "n": None}


def test_no_mapping_returns_the_body() -> None:
    assert apply(None, Response("text", False)) == "text"


def test_missing_path_and_non_json_are_precise() -> None:
    with pytest.raises(MappingError, match=r"\$\.data\.nope"):
        apply({"v": "$.data.nope"}, Response(BODY, True))
    with pytest.raises(MappingError, match="not JSON"):
        apply({"v": "$.id"}, Response("<html>", False))
    assert apply({"s": "$status"}, Response("<html>", False, 200)) == {"s": 200}  # status needs no JSON


@pytest.mark.parametrize("bad", ["$.a[", "$..a", "data.id", "$headers."])
def test_unparseable_expressions(bad: str) -> None:
    with pytest.raises(MappingError):
        parse(bad)


def test_rate_specs() -> None:
    assert parse_rate("100/min") == (100, 60.0)
    assert parse_rate("10/5s") == (10, 5.0)
    assert parse_rate("3600/h") == (3600, 3600.0)
    assert parse_rate_overrides("api.example.com=60/min, 127.0.0.1:8080=10/5s") == {
        "api.example.com": (60, 60.0), "127.0.0.1:8080": (10, 5.0)}
    for bad in ("0/min", "ten/min", "10/0s", "5"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_placeholders() -> None:
    assert placeholders({"u": "${input.a.b}/${secrets.team/x#k}"}) == [("input", "a.b"), ("secrets", "team/x#k")]
    with pytest.raises(ValueError, match="env.HOME"):
        placeholders("${env.HOME}")


def _fields(config: dict) -> list[str]:
    with pytest.raises(ValidationFailed) as exc:
        check_integration(config)
    assert exc.value.status == 422
    return [d["field"] for d in exc.value.details]


def test_definition_checks() -> None:
    check_integration({"request": {"url": "https://api.example.com/x", "method": "post"},
                       "auth": {"type": "bearer", "secretRef": "tok"}, "responseMapping": {"id": "$.id"}})
    check_integration({"request": {"url": "${input.url}"}})  # a templated scheme is checked at run time
    check_integration({"integrationId": "crm", "operation": "find", "params": {"q": "${input.q}"}})
    assert _fields({"request": {"url": "ftp://x/y"}}) == ["executionConfig.request.url"]
    assert _fields({}) == ["executionConfig"]
    assert _fields({"request": {"url": "http://x", "method": "FETCH"}}) == ["executionConfig.request.method"]
    assert _fields({"request": {"url": "http://x"}, "auth": {"type": "magic"}}) == ["executionConfig.auth.type"]
    assert _fields({"request": {"url": "http://x"}, "auth": {"type": "bearer"}}) == ["executionConfig.auth.secretRef"]
    assert set(_fields({"request": {"url": "http://x"}, "auth": {"type": "oauth2_client_credentials",
                                                                  "secretRef": "s"}})) == {
        "executionConfig.auth.tokenUrl", "executionConfig.auth.clientId"}
    assert _fields({"request": {"url": "http://x"}, "responseMapping": {"a": "$.b["}}) == [
        "executionConfig.responseMapping"]
    assert _fields({"request": {"url": "http://x"}, "rateLimit": {"requestsPerMinute": 0}}) == [
        "executionConfig.rateLimit.requestsPerMinute"]
