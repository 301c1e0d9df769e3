"""Turning what happened in a container into a RunResult (error code, message, details).

Order of precedence: cancelled > time limit > stream output cap > memory > output file cap >
non-zero exit > invalid output > success. User mistakes are never SANDBOX_ERROR; that code
is reserved for a harness that ended without a result for no user-attributable reason; a
container killed or removed from outside (``kill_task`` in another process, ``docker kill``)
is CANCELLED.

Decision on code without ``main`` and without an output file: the attempt succeeds with
output ``null`` (a script may legitimately only print), and ``error_details`` stays None.
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass, field, replace
from typing import Any

from sandbox import spec as s
from sandbox.cgroups import Usage
from sandbox.spec import RunResult, RunSpec


@dataclass
class Outcome:
    """Raw facts gathered by the runner for one attempt."""

    reader: Any  # sandbox.stream.AttachReader
    stopped: str | None = None  # None | "cancelled" | "timeout" (we killed it)
    duration_ms: int = 0
    usage: Usage = field(default_factory=Usage)
    state: dict[str, Any] | None = None  # container State when the harness died without a record


def _signame(sig: int) -> str:
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _memory_hit(usage: Usage, limit: int) -> bool:
    """Did the cgroup OOM-kill something (or, if unknown, was the peak at the limit)?"""
    if usage.oom_kills is not None:
        return usage.oom_kills > 0
    return usage.peak_memory is not None and usage.peak_memory >= 0.95 * limit


def _fail(result: RunResult, code: str, message: str, details: dict | None = None) -> RunResult:
    result.ok = False
    result.error_code = code
    result.error_message = message
    result.error_details = details
    return result


def classify(o: Outcome, spec: RunSpec) -> RunResult:
    """Build the RunResult of one attempt."""
    lim = spec.limits
    out_tail, err_tail = o.reader.tails()
    usage = o.usage
    record = o.reader.record
    if usage.oom_kills is None and record and isinstance(record.get("maxrss"), int):
        # no cgroup (process mode): the harness's measure of the user process is the one to trust
        usage = replace(usage, peak_memory=record["maxrss"])
    result = RunResult(ok=False, duration_ms=o.duration_ms,
                       cpu_time_ms=None if usage.cpu_ns is None else usage.cpu_ns // 1_000_000,
                       peak_memory_bytes=usage.peak_memory, stdout_tail=out_tail, stderr_tail=err_tail)
    mem_mib = lim.memory_bytes / 2**20
    if o.stopped == "cancelled":
        return _fail(result, s.CANCELLED, "the attempt was cancelled")
    if o.stopped == "timeout":
        return _fail(result, s.TIME_LIMIT_EXCEEDED, f"time limit of {lim.timeout_s:g}s exceeded",
                     {"timeoutSeconds": lim.timeout_s})
    if o.reader.over_cap:
        return _fail(result, s.OUTPUT_LIMIT_EXCEEDED,
                     f"stdout+stderr exceeded {lim.output_bytes} bytes", {"limitBytes": lim.output_bytes})
    if record is None or record.get("corrupt"):
        state = o.state or {}
        result.exit_code = state.get("ExitCode")
        if _memory_hit(usage, lim.memory_bytes) or state.get("OOMKilled"):
            return _fail(result, s.MEMORY_LIMIT_EXCEEDED, f"memory limit of {mem_mib:g} MiB exceeded",
                         {"limitBytes": lim.memory_bytes})
        if state.get("EngineError"):
            return _fail(result, s.SANDBOX_ERROR, "the sandbox container was lost: the Docker engine stopped "
                         "answering (restarting?)", {"reason": "ENGINE_UNREACHABLE", "error": state["EngineError"]})
        if state.get("Removed") or state.get("ExitCode") == 137:  # kill_task elsewhere, docker kill
            return _fail(result, s.CANCELLED, "the container was killed or removed from outside")
        return _fail(result, s.SANDBOX_ERROR,
                     f"sandbox harness ended without a result (container exit {state.get('ExitCode')})")

    status = record.get("status") or {}
    sig = record.get("signal")
    exit_code = record.get("exit") if sig is None else 128 + int(sig)
    result.exit_code = exit_code
    if status.get("exception") == "MemoryError" or (
            exit_code != 0 and _memory_hit(usage, lim.memory_bytes)):
        return _fail(result, s.MEMORY_LIMIT_EXCEEDED, f"memory limit of {mem_mib:g} MiB exceeded",
                     {"limitBytes": lim.memory_bytes})
    if record.get("output_error") == "too_large":
        return _fail(result, s.OUTPUT_LIMIT_EXCEEDED, str(record.get("output_message")),
                     {"limitBytes": lim.output_bytes})
    if exit_code != 0:
        details: dict[str, Any] = {"exitCode": exit_code}
        if sig is not None:
            details["signal"] = _signame(int(sig))
            message = f"process killed by {_signame(int(sig))}"
        else:
            message = f"process exited with code {exit_code}"
        if status.get("exception"):
            details["exception"] = status["exception"]
            details["line"] = status.get("line")
            message = f"{status['exception']}: {status.get('message')}"
            if status.get("line") is not None:
                message += f" (line {status['line']})"
        return _fail(result, s.NON_ZERO_EXIT, message, details)
    if record.get("output_error"):
        return _fail(result, s.OUTPUT_VALIDATION_ERROR, str(record.get("output_message")))
    result.ok = True
    result.output = record.get("output")
    return result
