"""Limits: sandbox resources (Kubernetes-style quantities clamped to operator ceilings), attempt and queue times."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskexec.core.config import Settings

_UNITS = {
    "": 1,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
}
_QTY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|k|M|G)?\s*$")


def parse_memory(value: str | int) -> int:
    """'128Mi' -> 134217728; plain integers are bytes."""
    if isinstance(value, int):
        return value
    m = _QTY.match(str(value))
    if not m:
        raise ValueError(f"invalid memory quantity {value!r} (use e.g. '128Mi' or '1Gi')")
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


def parse_cpu(value: str | float | int) -> float:
    """'0.5' or '500m' -> 0.5 cores."""
    text = str(value).strip()
    try:
        cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise ValueError(f"invalid cpu quantity {value!r} (use e.g. '0.5' or '500m')") from None
    if cores <= 0:
        raise ValueError("cpu must be positive")
    return cores


@dataclass(frozen=True)
class Ceilings:
    max_cpu: float
    max_memory_bytes: int
    max_timeout_s: float


def attempt_timeout_s(definition_timeout_ms: int | None, execution_config: dict | None,
                      default_s: float, max_s: float) -> float:
    """Wall time of one attempt: resourceRequirements.timeoutSeconds, else the definition's
    `timeout` (ms), else the default; never above the operator's ceiling."""
    res = (execution_config or {}).get("resourceRequirements") or {}
    timeout = res.get("timeoutSeconds") or (definition_timeout_ms or 0) / 1000 or default_s
    return min(float(timeout), float(max_s))


def queued_timeout_s(settings: Settings, *configs: dict[str, Any] | None) -> int:
    """The queued timeout in seconds: the last config naming `queuedTimeoutSeconds` wins, else the setting."""
    limit = settings.queued_timeout_s
    for config in configs:
        value = (config or {}).get("queuedTimeoutSeconds")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            limit = value
    return limit


def queue_deadline(settings: Settings, ready_at: datetime, definition_config: dict[str, Any] | None,
                   task_config: dict[str, Any] | None) -> datetime:
    """When a task that may run from `ready_at` stops waiting for a worker (the `queued` sweep ends it)."""
    return ready_at + timedelta(seconds=queued_timeout_s(settings, definition_config, task_config))
