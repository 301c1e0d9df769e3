"""ProcessRunner: one attempt of user code in a child process, where there is no Docker (AWS Lambda).

The same harness as the containers (``sandbox/harness.py``, in process mode) runs as a child of this
process with:

* no inherited environment (only ``PATH``, ``HOME``, ``LANG``, ``TMPDIR`` and the job's variables);
* a fresh working directory (mode 0700) as its cwd, ``HOME`` and ``TMPDIR``, wiped after the attempt;
* rlimits on CPU time, address space (memory), processes, file size, open files and core dumps;
* its own session, and as a child subreaper it kills every descendant when the code ends;
* when this process is root (a container, the tests): a dedicated unprivileged uid (``run_as``) and a
  fresh network namespace without interfaces; afterwards every process of that uid is killed, so
  nothing the code started survives, whatever it did. Without root (Lambda's sandbox user) the code
  runs as our own uid: the function's micro-VM is the isolation boundary (docs/sandbox.md).

The host enforces the wall-clock limit and the output cap and honours a cancel event, as DockerRunner.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sandbox.cgroups import Usage
from sandbox.classify import Outcome, classify
from sandbox.spec import RUNTIMES, TIME_LIMIT_EXCEEDED, RunResult, RunSpec
from sandbox.stream import AttachReader, _Stream

HARNESS = Path(__file__).with_name("harness.py")
_CLONE_NEWNET = 0x40000000
_POLL_S = 0.1
_KILL_ROUNDS = 50


class PipeReader(AttachReader):
    """The AttachReader's marker and cap logic over the child's stdout and stderr pipes."""

    def __init__(self, stdout: int, stderr: int, nonce: str, output_cap: int, tail_bytes: int) -> None:
        super().__init__(None, nonce, output_cap, tail_bytes)
        self.fds = {stdout: self.out, stderr: self.err}
        self.open = {stdout, stderr}

    def pump(self, timeout: float) -> None:
        import select

        ready, _, _ = select.select(list(self.open), [], [], max(timeout, 0.0))
        for fd in ready:
            try:
                chunk = os.read(fd, 256 * 1024)
            except OSError:
                chunk = b""
            stream: _Stream = self.fds[fd]
            if not chunk:
                self.open.discard(fd)
                stream.flush()
                continue
            stream.feed(chunk)
            if stream is self.err:
                self._check_record()
        if not self.open:
            self.eof = True


class ProcessRunner:
    """Runs :class:`RunSpec` attempts in child processes (see the module docstring)."""

    def __init__(self, workdir_base: str | None = None, run_as: int | None = 64999, log_tail_bytes: int = 64 * 1024,
                 python: str | None = None) -> None:
        self.base = Path(workdir_base or tempfile.gettempdir())
        self.root = os.geteuid() == 0
        self.uid = run_as if self.root and run_as is not None else os.geteuid()
        self.log_tail_bytes = log_tail_bytes
        self.python = python or _interpreter(self.uid)
        self._lock = threading.Lock()  # one attempt at a time: the uid-wide kill must not hit a neighbour
        if not self.root:
            _make_subreaper()  # orphans of the code come back to us and are killed after each attempt

    @property
    def isolation(self) -> dict[str, Any]:
        return {"kind": "process", "uid": self.uid, "separateUser": self.uid != os.geteuid(),
                "networkNamespace": self.root}

    def run(self, spec: RunSpec, cancel: threading.Event | None = None) -> RunResult:
        if spec.runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {spec.runtime!r}")
        with self._lock:
            return self._run(spec, cancel)

    def _run(self, spec: RunSpec, cancel: threading.Event | None) -> RunResult:
        nonce = secrets.token_hex(16)
        workdir = Path(tempfile.mkdtemp(prefix="tel-task-", dir=self.base))
        before = set(_children()) if not self.root else set()
        proc: subprocess.Popen[bytes] | None = None
        try:
            for sub in ("output", "tmp"):
                (workdir / sub).mkdir()
            if self.uid != os.geteuid():
                for path in (workdir, workdir / "output", workdir / "tmp"):
                    os.chown(path, self.uid, self.uid)
            job = json.dumps({"nonce": nonce, "runtime": spec.runtime, "code": spec.code, "input": spec.input,
                              "env": dict(spec.env), "output_bytes": spec.limits.output_bytes,
                              "memory_bytes": spec.limits.memory_bytes, "root": str(workdir), "process": True},
                             allow_nan=False).encode() + b"\n"
            proc = subprocess.Popen(
                [self.python, "-I", "-S", "-c", HARNESS.read_text()], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, cwd=workdir, start_new_session=True, close_fds=True,
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
                preexec_fn=self._limits(spec))  # noqa: PLW1509 - rlimits, netns and uid must be set in the child
            assert proc.stdin and proc.stdout and proc.stderr
            outcome = self._drive(proc, job, nonce, spec, cancel)
            result = classify(outcome, spec)
            if result.exit_code == 128 + signal.SIGXCPU:  # the CPU-time rlimit: a time limit too
                result.error_code, result.error_message = TIME_LIMIT_EXCEEDED, "CPU time limit exceeded"
                result.error_details = {"timeoutSeconds": spec.limits.timeout_s, "limit": "cpu"}
            result.environment = {"runtime": spec.runtime, "isolation": self.isolation}
            return result
        finally:
            self._kill_everything(proc, before)
            shutil.rmtree(workdir, ignore_errors=True)

    def _limits(self, spec: RunSpec) -> Any:
        lim = spec.limits
        uid, root = self.uid, self.root
        nproc = lim.pids if uid != os.geteuid() else lim.pids + _processes_of(uid)
        memory = max(2 * lim.memory_bytes, lim.memory_bytes + 256 * 2**20)
        cpu_s = int(lim.timeout_s * max(lim.cpu, 1.0)) + 1

        def apply() -> None:  # runs in the child between fork and exec: no locks, no allocation-heavy work
            if root:
                _unshare_net()
            for which, value in ((resource.RLIMIT_CPU, (cpu_s, cpu_s + 1)), (resource.RLIMIT_AS, (memory, memory)),
                                 (resource.RLIMIT_FSIZE, (lim.tmp_bytes, lim.tmp_bytes)),
                                 (resource.RLIMIT_NOFILE, (256, 256)), (resource.RLIMIT_CORE, (0, 0)),
                                 (resource.RLIMIT_NPROC, (nproc, nproc))):
                resource.setrlimit(which, value)
            if uid != os.geteuid():
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)

        return apply

    def _drive(self, proc: subprocess.Popen[bytes], job: bytes, nonce: str, spec: RunSpec,
               cancel: threading.Event | None) -> Outcome:
        assert proc.stdin and proc.stdout and proc.stderr
        reader = PipeReader(proc.stdout.fileno(), proc.stderr.fileno(), nonce, spec.limits.output_bytes,
                            self.log_tail_bytes)
        outcome = Outcome(reader=reader)
        started = time.monotonic()
        hard_stop = started + spec.limits.timeout_s
        with contextlib.suppress(OSError):
            proc.stdin.write(job)
            proc.stdin.flush()
        while not reader.done:
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                outcome.stopped = "cancelled"
                break
            if now >= hard_stop:
                outcome.stopped = "timeout"
                break
            reader.pump(min(_POLL_S, hard_stop - now))
        outcome.duration_ms = int((time.monotonic() - started) * 1000)
        with contextlib.suppress(OSError):
            proc.stdin.close()  # the harness waits on stdin after its record: let it go
        _, status, usage = _wait4(proc, 5.0 if outcome.stopped is None else 0.0)
        outcome.usage = usage
        if reader.record is None and outcome.stopped is None:
            outcome.state = {"ExitCode": status}
        return outcome

    def _kill_everything(self, proc: subprocess.Popen[bytes] | None, before: set[int]) -> None:
        """Nothing the attempt started may survive it."""
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.kill()
                proc.wait(5)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                with contextlib.suppress(Exception):
                    pipe.close()  # type: ignore[union-attr]
        if self.uid != os.geteuid():
            _kill_uid(self.uid)
        else:  # same uid (Lambda): the orphans re-parented to us, our subreaper
            for _ in range(_KILL_ROUNDS):
                stray = [pid for pid in _children() if pid not in before]
                if not stray:
                    break
                for pid in stray:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                for pid in stray:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, 0)


def _wait4(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, int | None, Usage]:
    """Reap the harness with its resource usage (its reaped descendants included)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            return proc.pid, None, Usage()
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            cpu_ns = int((ru.ru_utime + ru.ru_stime) * 1e9)
            return pid, proc.returncode, Usage(cpu_ns=cpu_ns, peak_memory=ru.ru_maxrss * 1024)
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
        time.sleep(0.01)


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid` (kill(-1) from a helper running as that uid), until none is left."""
    for _ in range(_KILL_ROUNDS):
        if not _processes_of(uid):
            return
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the helper child
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                for _ in range(3):
                    with contextlib.suppress(OSError):
                        os.kill(-1, signal.SIGKILL)  # every process of this uid but the helper itself
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.01)


def _processes_of(uid: int) -> int:
    """Tasks (threads included: RLIMIT_NPROC counts them) whose real uid is `uid`."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid == uid:
                count += len(os.listdir(f"/proc/{entry}/task"))
        except OSError:
            continue
    return count


def _children() -> list[int]:
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[1].decode() == me:
            found.append(int(entry))
    return found


def _interpreter(uid: int) -> str:
    """Ours when the code runs as our uid; else a system python3 the other uid can surely execute
    (ours may live under a private home directory). The harness needs the standard library only."""
    if uid != os.geteuid():
        for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
            if os.path.exists(candidate):
                return candidate
    return sys.executable


def _make_subreaper() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _unshare_net() -> None:
    """A new network namespace with only a loopback that is down: no route anywhere."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
