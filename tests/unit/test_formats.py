"""`format` keywords are checked (jsonschema's format checker with its extras installed), worded once, and the
web inbox's form uses the very same words (api/static/inbox/formats.js)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from taskexec.contract.validation import FORMAT_CHECKER, FORMAT_MESSAGES, format_message, validate_instance
from taskexec.core.exceptions import ValidationFailed

FORMATS_JS = Path(__file__).resolve().parents[2] / "api" / "static" / "inbox" / "formats.js"

SCHEMA = {"type": "object", "properties": {
    "email": {"type": "string", "format": "email"}, "when": {"type": "string", "format": "date-time"},
    "day": {"type": "string", "format": "date"}, "site": {"type": "string", "format": "uri"},
    "id": {"type": "string", "format": "uuid"}, "ip": {"type": "string", "format": "ipv4"},
    "pattern": {"type": "string", "format": "regex"}}}


def test_the_inbox_form_has_the_servers_messages() -> None:
    text = FORMATS_JS.read_text()
    table = re.search(r"/\* format-messages \*/(.*?)/\* end-format-messages \*/", text, re.S)
    assert table, "formats.js lost its message table markers"
    assert json.loads(table.group(1)) == FORMAT_MESSAGES
    assert '"must be a valid " + format' in text and format_message("regex") == "must be a valid regex"


@pytest.mark.parametrize(("fmt", "bad"), [
    ("email", "no-at-sign"), ("date-time", "2024-05-01T09:30:00"), ("date", "2024-13-01"), ("time", "25:00:00Z"),
    ("uri", "no scheme"), ("uri-reference", "a b"), ("uuid", "1234"), ("ipv4", "1.2.3"),
    ("ipv6", "1:2"), ("hostname", "-bad-.example"), ("duration", "3 days"), ("json-pointer", "no-slash"),
    ("regex", "(unclosed"),
])
def test_every_format_has_a_real_checker(fmt: str, bad: str) -> None:
    """Without the extras some formats (uri, date-time, duration, ...) silently pass anything."""
    assert fmt in FORMAT_CHECKER.checkers
    assert not FORMAT_CHECKER.conforms(bad, fmt)


def test_bad_formats_are_422_naming_each_field_with_the_message() -> None:
    bad = {"email": "alice.example.com", "when": "2024-05-01 09:30", "day": "2024-02-30", "site": "not a uri",
           "id": "1234", "ip": "10.0.0.256", "pattern": "(unclosed"}
    with pytest.raises(ValidationFailed) as exc:
        validate_instance(SCHEMA, bad, "input")
    got = {d["field"]: d["message"] for d in exc.value.details}
    assert got == {"input.email": FORMAT_MESSAGES["email"], "input.when": FORMAT_MESSAGES["date-time"],
                   "input.day": FORMAT_MESSAGES["date"], "input.site": FORMAT_MESSAGES["uri"],
                   "input.id": FORMAT_MESSAGES["uuid"], "input.ip": FORMAT_MESSAGES["ipv4"],
                   "input.pattern": "must be a valid regex"}


def test_good_formats_pass() -> None:
    validate_instance(SCHEMA, {"email": "alice@example.com", "when": "2024-05-01T09:30:00+02:00", "day": "2024-02-29",
                               "site": "https://example.com/a?b=c", "id": "9f1c6a3e-2b1d-4c8e-9a57-0c1d2e3f4a5b",
                               "ip": "192.0.2.7", "pattern": "^a+$"}, "input")


def test_no_format_checker_that_is_slow_to_import() -> None:
    """rfc3987-syntax (the `iri` checker) compiles a grammar on import: seconds of CPU at every process start."""
    code = "import sys, taskexec.contract.validation; print('rfc3987_syntax' in sys.modules, 'lark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["False", "False"]
