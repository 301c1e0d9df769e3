"""Structured JSON logs: task fields from the context, LOG_LEVEL honoured, secrets never printed."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from typing import Any

import pytest

from taskexec.observability.logs import JsonFormatter, bind_task, clear_task, register_secret


def line(msg: str, *args: Any, **extra: Any) -> dict[str, Any]:
    record = logging.LogRecord("taskexec.test", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return json.loads(JsonFormatter().format(record))  # type: ignore[no-any-return]


def test_task_context_is_on_every_line_until_cleared() -> None:
    bind_task(taskId="t-1", definition="hello", attempt=2, correlationId="corr-9")
    try:
        out = line("sandbox started %s", "c0ffee")
        assert out["msg"] == "sandbox started c0ffee" and out["level"] == "INFO"
        assert (out["taskId"], out["definition"], out["attempt"], out["correlationId"]) == ("t-1", "hello", 2, "corr-9")
        assert line("x", attempt=3)["attempt"] == 3  # an explicit extra wins
    finally:
        clear_task()
    assert "taskId" not in line("after")


def test_task_context_does_not_leak_between_threads() -> None:
    seen: list[dict[str, Any]] = []
    bind_task(taskId="mine")
    try:
        t = threading.Thread(target=lambda: seen.append(line("other thread")))
        t.start()
        t.join()
    finally:
        clear_task()
    assert "taskId" not in seen[0]


def test_secrets_are_masked_by_value_key_and_shape() -> None:
    register_secret("s3cr3t-value-123")
    out = line("calling with s3cr3t-value-123", headers={"Authorization": "Bearer abc.def.ghi", "X": "ok"},
               password="hunter22", url="postgresql://app:pw-very-secret@db:5432/tel", dispatchToken="d-1")
    text = json.dumps(out)
    for secret in ("s3cr3t-value-123", "abc.def.ghi", "hunter22", "pw-very-secret"):
        assert secret not in text
    assert out["headers"] == {"Authorization": "***", "X": "ok"}
    assert out["url"] == "postgresql://app:***@db:5432/tel"
    assert out["dispatchToken"] == "d-1"  # an opaque id, not a credential
    assert "Bearer ***" in line("header was Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig")["msg"]


SNIPPET = """
import logging
from taskexec.core.config import load_settings
from taskexec.observability.logs import configure_logging, secrets_of
s = load_settings()
configure_logging(s.log_level, secrets_of(s))
log = logging.getLogger("taskexec.snippet")
log.info("an info line")
log.warning("token is %s", s.jwt_secret.get_secret_value())
"""


def test_log_level_is_honoured_and_configured_secrets_are_masked() -> None:
    secret = "jwt-secret-for-the-log-test-0123456789"
    env = {**os.environ, "LOG_LEVEL": "warning", "TEL_JWT_SECRET": secret}
    out = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True, timeout=60)
    lines = [json.loads(x) for x in out.stderr.splitlines() if x.startswith("{")]
    assert [x["level"] for x in lines] == ["WARNING"], out.stderr
    assert lines[0]["msg"] == "token is ***"
    assert secret not in out.stderr


KOMBU_SNIPPET = """
import logging
from kombu.transport.virtual import base
from taskexec.observability.logs import configure_logging
configure_logging("INFO")
base.logger.info(base.RESTORING_FMT.format(2))
logging.getLogger("kombu.connection").info("kombu chatter")
"""


def test_kombu_restoring_unacknowledged_messages_is_logged_and_its_chatter_is_not() -> None:
    """A dropped broker connection puts running tasks' messages back: that line explains the duplicate deliveries
    that follow (kombu 5.7 logs it at INFO on its module logger; earlier releases printed it to stderr)."""
    out = subprocess.run([sys.executable, "-c", KOMBU_SNIPPET], capture_output=True, text=True, timeout=60)
    lines = [json.loads(x) for x in out.stderr.splitlines() if x.startswith("{")]
    assert [x["msg"] for x in lines] == ["Restoring 2 unacknowledged message(s)"], out.stderr


CELERY_SNIPPET = """
import logging
from taskexec.observability.logs import bind_task, configure_logging
configure_logging("%s")
bind_task(taskId="t-abc", definition="d")
logging.getLogger("celery.worker.strategy").info("Task taskexec.execute.integration[abc] received")
logging.getLogger("celery.app.trace").info("Task taskexec.execute.integration[abc] succeeded in 0.01s")
logging.getLogger("celery.app.trace").error("Task taskexec.execute.integration[abc] raised unexpected: X")
logging.getLogger("workers.base").info("task finished")
"""


@pytest.mark.parametrize(("level", "expected"), [
    ("INFO", ["Task taskexec.execute.integration[abc] raised unexpected: X", "task finished"]),
    ("DEBUG", ["Task taskexec.execute.integration[abc] received",
               "Task taskexec.execute.integration[abc] succeeded in 0.01s",
               "Task taskexec.execute.integration[abc] raised unexpected: X", "task finished"]),
])
def test_celery_per_task_info_lines_show_at_debug_only(level: str, expected: list[str]) -> None:
    """Celery's "received" / "succeeded" lines repeat the pools' own per-task lines; its errors always show,
    and Celery's lines carry the task's context like the pools' own."""
    out = subprocess.run([sys.executable, "-c", CELERY_SNIPPET % level], capture_output=True, text=True, timeout=60)
    lines = [json.loads(x) for x in out.stderr.splitlines() if x.startswith("{")]
    assert [x["msg"] for x in lines] == expected, out.stderr
    assert all(x["taskId"] == "t-abc" for x in lines), lines
