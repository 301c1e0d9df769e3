"""Structured JSON log lines; task fields passed as `extra` become top-level keys.

Every line written while a task is being handled carries that task's `taskId`, `definition`,
`attempt` and `correlationId`: worker hooks bind them to a context variable (`bind_task`) and the
formatter adds them (explicit `extra` fields win). Secrets never reach a line: values under
secret-looking keys are masked, as are bearer tokens, URL passwords and every value registered
with `register_secret` (the configured secrets, and secrets an executor resolves at run time).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
TASK_FIELDS = ("taskId", "definition", "attempt", "correlationId")
MASK = "***"
_SECRET_KEY = re.compile(r"(?i)(secret|passw|token|authorization|api[-_]?key|credential|private[-_]?key)")
_NOT_SECRET_KEYS = frozenset({"dispatchToken"})  # an opaque dispatch id, not a credential
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_URL_PASSWORD = re.compile(r"(\w+://[^:/@\s]+:)([^@\s]+)(@)")
_MIN_SECRET_LEN = 6
_MAX_SECRETS = 4096
KOMBU_RESTORE_LOGGER = "kombu.transport.virtual.base"  # kombu's "Restoring N unacknowledged message(s)"
# Celery's per-task INFO lines ("Task ... received", "Task ... succeeded in ...s"): shown at DEBUG only
CELERY_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")

_task: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("taskexec_task", default=None)
_secrets: set[str] = set()
_longest_first: tuple[str, ...] = ()  # _secrets, longest first (a secret containing another is masked whole)


def bind_task(**fields: Any) -> None:
    """Add task fields (taskId, definition, attempt, correlationId) to every line of this context."""
    current = dict(_task.get() or {})
    current.update({k: v for k, v in fields.items() if v is not None})
    _task.set(current)


def clear_task() -> None:
    _task.set(None)


def task_context() -> dict[str, Any]:
    return dict(_task.get() or {})


def register_secret(*values: str | None) -> None:
    """Mask these values wherever they would appear in a log line (short values are ignored)."""
    global _longest_first
    for value in values:
        if value and len(value) >= _MIN_SECRET_LEN and len(_secrets) < _MAX_SECRETS:
            _secrets.add(value)
    _longest_first = tuple(sorted(_secrets, key=len, reverse=True))


def secrets_of(settings: Any) -> list[str]:
    """The secret values of a Settings object (its SecretStr fields), for `configure_logging`."""
    from pydantic import SecretStr

    return [v.get_secret_value() for v in vars(settings).values() if isinstance(v, SecretStr)]


def redact(text: str) -> str:
    """`text` with registered secrets, bearer/basic credentials and URL passwords masked."""
    for value in _longest_first:
        if value in text:
            text = text.replace(value, MASK)
    lower = text.lower()
    if "bearer" in lower or "basic" in lower:  # (the patterns cannot match otherwise: skip them, per line)
        text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    if "://" in text and "@" in text:
        text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
    return text


def _scrub(key: str, value: Any) -> Any:
    if key not in _NOT_SECRET_KEYS and _SECRET_KEY.search(key):
        return MASK if value else value
    if isinstance(value, dict):
        return {k: _scrub(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(key, v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(task_context())
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = _scrub(key, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, default=str))


def configure_logging(level: str = "INFO", secrets: Iterable[str | None] = ()) -> None:
    """Idempotent: one JSON handler on the root logger at `level`; `secrets` are never printed."""
    register_secret(*secrets)
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.handlers = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "docker", "kombu", "amqp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # Except kombu's "Restoring N unacknowledged message(s)" (INFO since kombu 5.7, a bare stderr line before):
    # a pool whose broker connection dropped puts its running tasks' messages back, and the duplicate
    # deliveries the router then refuses are explained by this line alone.
    logging.getLogger(KOMBU_RESTORE_LOGGER).setLevel(root.level)
    # Celery's two INFO lines per task repeat the pools' own "task started" / "task finished" (which carry the
    # task id, attempt and trace ids; Celery's name only its message id) and cost a pool about 0.4 ms a task.
    # Celery's warnings and errors (a task that raised, a lost worker) still show; at DEBUG, everything does.
    for celery_task_logger in CELERY_TASK_LOGGERS:
        logging.getLogger(celery_task_logger).setLevel(logging.WARNING if root.level >= logging.INFO else root.level)
