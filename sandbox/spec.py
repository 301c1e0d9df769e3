"""Value types of the sandbox: what to run (RunSpec, Limits) and what happened (RunResult)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RUNTIMES = ("python", "shell")

# error_code values of RunResult
NON_ZERO_EXIT = "NON_ZERO_EXIT"
TIME_LIMIT_EXCEEDED = "TIME_LIMIT_EXCEEDED"
MEMORY_LIMIT_EXCEEDED = "MEMORY_LIMIT_EXCEEDED"
OUTPUT_LIMIT_EXCEEDED = "OUTPUT_LIMIT_EXCEEDED"
OUTPUT_VALIDATION_ERROR = "OUTPUT_VALIDATION_ERROR"
CANCELLED = "CANCELLED"
SANDBOX_ERROR = "SANDBOX_ERROR"
# Every code a RunResult may carry. The worker reports them as a task's `error.code`, so each must be one of
# the task error codes (taskexec.core.constants.TaskErrorCode); tests/unit/test_error_codes.py keeps them in step
# (the sandbox knows nothing of taskexec, so the test compares them).
ERROR_CODES = frozenset({NON_ZERO_EXIT, TIME_LIMIT_EXCEEDED, MEMORY_LIMIT_EXCEEDED, OUTPUT_LIMIT_EXCEEDED,
                         OUTPUT_VALIDATION_ERROR, CANCELLED, SANDBOX_ERROR})


@dataclass(frozen=True)
class Limits:
    """Resource limits of one attempt."""

    cpu: float = 1.0  # cores (CFS quota)
    memory_bytes: int = 128 * 2**20  # swap off (memswap == mem)
    timeout_s: float = 300.0  # wall time, enforced by the host
    pids: int = 64
    output_bytes: int = 1 * 2**20  # stdout+stderr together, and the output file, each capped
    tmp_bytes: int = 64 * 2**20  # /tmp tmpfs size

    def container_class(self) -> tuple[float, int, int, int, int]:
        """The part of the limits fixed at container creation (pool key)."""
        return (self.cpu, self.memory_bytes, self.pids, self.output_bytes, self.tmp_bytes)


@dataclass(frozen=True)
class RunSpec:
    """One attempt of one task."""

    task_id: str
    attempt: int
    runtime: str  # "python" | "shell"
    code: str
    input: Any = None  # JSON value
    limits: Limits = field(default_factory=Limits)
    env: dict[str, str] = field(default_factory=dict)  # the ONLY variables the code sees
    network: bool = False
    worker_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class RunResult:
    """Outcome of one attempt, ready for executionMetadata."""

    ok: bool
    output: Any = None
    error_code: str | None = None
    error_message: str | None = None
    error_details: dict | None = None
    exit_code: int | None = None
    duration_ms: int = 0
    cpu_time_ms: int | None = None
    peak_memory_bytes: int | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    container_id: str | None = None
    environment: dict = field(default_factory=dict)
