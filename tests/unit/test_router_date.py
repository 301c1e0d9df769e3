"""The router's Date header: gunicorn's formatter, cached per second (commands.cli.http_date)."""

from __future__ import annotations

import time
from email.utils import formatdate, parsedate_to_datetime

from commands.cli import http_date


def test_a_given_time_is_formatted_as_gunicorn_formats_it() -> None:
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert http_date(1_800_000_000.7) == formatdate(1_800_000_000.7, usegmt=True)


def test_now_is_the_current_second_in_rfc_9110_form() -> None:
    before = int(time.time())
    value = http_date()
    after = int(time.time())
    assert value.endswith(" GMT")
    assert before <= parsedate_to_datetime(value).timestamp() <= after
    assert http_date() in (value, formatdate(time.time(), usegmt=True))  # the same second: the cached string
